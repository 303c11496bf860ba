"""The docs stay true to the code: generated pages are current, and the README stays short.

The configuration and CLI references, the code map and the benchmark tables are generated
by ``docs/gen.py`` from the code and ``benchmarks/results/*.json``; a page committed before
its source changed is stale, and this test names the command that refreshes it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from docs import gen

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = f"run `{gen.REGENERATE}` and commit the result"


@pytest.mark.timeout(120)
def test_every_generated_page_is_committed_and_current(tmp_path):
    assert gen.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.md"))
    assert written, "the generator wrote nothing"
    stale = [
        rel
        for rel in written
        if not (ROOT / "docs" / rel).is_file()
        or (ROOT / "docs" / rel).read_text(encoding="utf-8")
        != (tmp_path / rel).read_text(encoding="utf-8")
    ]
    assert not stale, f"stale or missing generated docs pages {stale}: {REGENERATE}"


@pytest.mark.timeout(60)
def test_every_generated_table_is_included_by_a_page():
    """mkdocs excludes docs/generated/ and --strict does not see an unused table; a table
    the generator writes but no page includes would silently never be shown."""
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))
    included = set(re.findall(r'--8<-- "(generated/[^"]+)"', pages))
    tables = {rel for rel in gen.pages() if rel.startswith("generated/")}
    assert tables - included == set(), f"generated tables no page includes: {tables - included}"


@pytest.mark.timeout(120)
@pytest.mark.integration  # two generator subprocesses
def test_the_generator_runs_as_a_module_and_is_deterministic(tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        done = subprocess.run(
            [sys.executable, "-m", "docs.gen", "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert done.returncode == 0, done.stderr
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.md")}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.md")}
    assert a == b


@pytest.mark.timeout(30)
def test_a_setting_without_a_description_stops_the_generator():
    class Section(BaseModel):
        documented: int = Field(1, description="has one")
        undocumented: int = 2

    with pytest.raises(SystemExit, match="section.undocumented has no Field"):
        gen.config_sections(Section, "section")


@pytest.mark.timeout(30)
def test_the_cli_reference_lists_every_command():
    import typer

    from jobs.cli.app import app

    text = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    for group, command in root.commands.items():
        for name in getattr(command, "commands", {None: None}):
            path = " ".join(p for p in ("facewatch", group, name) if p)
            assert f"# {path}\n" in text, f"{path} missing from the CLI reference: {REGENERATE}"


@pytest.mark.timeout(30)
def test_the_readme_is_short_and_its_docs_links_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "the README is a five-minute read; move detail to docs/"
    links = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert links, "the README links into docs/"
    missing = sorted({link for link in links if not (ROOT / link).is_file()})
    assert not missing, f"README links to missing docs pages: {missing}"


GLOBAL_VALUE_OPTIONS = {"--home", "--config", "-c", "--store"}


def _facewatch_commands(text: str) -> list[str]:
    """Every `facewatch ...` command line in code blocks and code spans of a Markdown text."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^(\s*[A-Z_]+=\S+\s+)*", "", line.strip())
            if line.startswith("facewatch "):
                found.append(line)
    found += re.findall(r"`(facewatch [^`]+)`", text)
    return found


def _unknown_options(line: str, root) -> list[str]:
    """The options of one command line that its command does not have."""
    tokens = [t.strip("[]|") for t in shlex.split(line, comments=True)[1:]]
    command, wrong, skip = root, [], False
    for i, token in enumerate(tokens):
        if skip or not token:
            skip = False
            continue
        if token == "--":  # `facewatch cluster run -- COMMAND`: a facewatch command follows
            return wrong + _unknown_options(shlex.join(["facewatch", *tokens[i + 1 :]]), root)
        if command is root and token in GLOBAL_VALUE_OPTIONS:
            skip = True
        elif token.startswith("-"):
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if token.split("=")[0] not in known | {"--help", "-v", "--verbose"}:
                wrong.append(f"{token} (in: {line})")
        elif token in getattr(command, "commands", {}):
            command = command.commands[token]
    return wrong


@pytest.mark.timeout(60)
def test_every_command_line_in_the_docs_uses_real_options():
    import typer

    from jobs.cli.app import app

    root = typer.main.get_command(app)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    wrong = [
        f"{page.relative_to(ROOT)}: {w}"
        for page in pages
        for line in _facewatch_commands(page.read_text(encoding="utf-8"))
        for w in _unknown_options(line, root)
    ]
    assert not wrong, "options the CLI does not have:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_the_option_checker_catches_a_wrong_option():
    import typer

    from jobs.cli.app import app

    root = typer.main.get_command(app)
    assert _unknown_options("facewatch --home H search x --list L --case C", root) == []
    assert _unknown_options("facewatch search x --lst L", root) == [
        "--lst (in: facewatch search x --lst L)"
    ]
