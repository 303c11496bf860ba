"""Evidence bundles: one ZIP per case that a court, or anyone, can check offline.

A bundle holds what the case produced, and the means to show it was not changed since:
- ``searches/N/``: each search's report (HTML), Parquet tables, summary and thumbnails;
- ``clips/SIGHTING.mp4``: an excerpt of the original file around every confirmed sighting;
- ``decisions.json``: the investigators' decisions in the case;
- ``audit/records.jsonl``: the case's audit records, whole, with their chain hashes, and
  ``audit/chain.jsonl``: (seq, prev_hash, hash) of every record from the case's first to
  its last, so the records are shown to sit in one unbroken chain without disclosing what
  the other records (other cases) say;
- ``manifest.json``: the SHA-256 of every source file searched and of every file above,
  and ``manifest.sha256``: the hash of the manifest.

``verify_bundle`` checks it: each file against the manifest, the manifest against its
hash, each audit record against its own hash and the chain, each confirmed sighting has
its clip. And the ZIP itself: the bundle is written deterministically (stored, fixed
times and modes, sorted names), so the verifier rebuilds it from its contents and compares
every byte; a changed byte in a header or the directory is found too, and named.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.audit import AuditLog, record_hash
from pipelines.cases import READ, Actor, CaseBook
from pipelines.catalog import utcnow
from pipelines.clips import ClipError, clip_span, cut_clip
from pipelines.errors import FacewatchError
from pipelines.video import find_videos

FORMAT = "facewatch-evidence/1"
MANIFEST, MANIFEST_HASH = "manifest.json", "manifest.sha256"
SEARCH_FILES = (
    "report.html",
    "sightings.parquet",
    "matches.parquet",
    "errors.parquet",
    "summary.json",
)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class EvidenceError(FacewatchError, ValueError):
    """A bundle cannot be made as asked (no such case, nothing searched...)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def case_records(
    audit: AuditLog, case_ref: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the case's records, the chain links from its first record to its last)."""
    chain, mine = [], []
    for r in audit.records():
        if r.get("details", {}).get("case") == case_ref:
            mine.append(r)
        if mine:
            chain.append({"seq": r["seq"], "prev_hash": r["prev_hash"], "hash": r["hash"]})
    last = mine[-1]["seq"] if mine else 0
    return mine, [c for c in chain if c["seq"] <= last]


def source_file(searched: list[Path], source_path: str, sha256: str | None = None) -> Path | None:
    """The searched file a sighting came from: same name (a search may have been run from
    another folder, so its path may be relative) and, given ``sha256``, same content."""
    name = Path(source_path).name
    for f in searched:
        if f.name == name and (sha256 is None or sha256_path(f) == sha256):
            return f
    return None


def case_searches(records: list[dict[str, Any]]) -> tuple[list[Path], list[Path]]:
    """(search output folders, paths searched) from the case's audit records."""
    outs = [Path(r["details"]["out"]) for r in records if r["action"] == "export.search"]
    paths = [Path(p) for r in records if r["action"] == "search" for p in r["details"]["paths"]]
    return list(dict.fromkeys(outs)), list(dict.fromkeys(paths))


@dataclass
class BundleParts:
    """What goes into a bundle, name -> bytes, and the manifest's facts."""

    files: dict[str, bytes] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    confirmed: list[dict[str, Any]] = field(default_factory=list)

    def add_file(self, name: str, path: Path) -> None:
        self.files[name] = Path(path).read_bytes()


def add_searches(parts: BundleParts, outs: list[Path], searched: list[Path]) -> None:
    for n, out in enumerate((o for o in outs if o.is_dir()), start=1):
        for name in SEARCH_FILES:
            if (out / name).is_file():
                parts.add_file(f"searches/{n}/{name}", out / name)
        for thumb in sorted((out / "thumbs").glob("*")) if (out / "thumbs").is_dir() else ():
            if thumb.is_file():
                parts.add_file(f"searches/{n}/thumbs/{thumb.name}", thumb)
    for src in find_videos([p for p in searched if p.exists()]):
        parts.sources.append(
            {"path": str(src), "sha256": sha256_path(src), "bytes": src.stat().st_size}
        )


def add_clips(parts: BundleParts, decisions: list[dict[str, Any]], scratch: Path) -> None:
    """A clip for every confirmed sighting; one that cannot be cut fails the export."""
    for d in decisions:
        if d["decision"] != "confirmed":
            continue
        name = f"clips/{d['sighting_id']}.mp4"
        lo, hi = clip_span(d["start_s"], d["end_s"])
        searched = [Path(src["path"]) for src in parts.sources]
        source = source_file(searched, d["source_path"]) or Path(d["source_path"])
        try:
            clip = cut_clip(source, lo, hi, scratch / f"{d['sighting_id']}.mp4")
        except ClipError as exc:
            raise EvidenceError(f"sighting {d['sighting_id']}: no clip ({exc})") from None
        parts.add_file(name, clip.path)
        parts.confirmed.append(
            {k: d[k] for k in ("sighting_id", "person_name", "source_path", "start_s", "end_s")}
            | {"clip": name, "clip_offset_s": round(clip.offset_s, 3)}
        )


def finish(
    parts: BundleParts,
    header: dict[str, Any],
    records: list[dict[str, Any]],
    chain: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
) -> None:
    """Add the audit records, the decisions and the manifest with its hash."""
    parts.files["audit/records.jsonl"] = "".join(
        json.dumps(r, sort_keys=True) + "\n" for r in records
    ).encode()
    parts.files["audit/chain.jsonl"] = "".join(
        json.dumps(c, sort_keys=True) + "\n" for c in chain
    ).encode()
    parts.files["decisions.json"] = json.dumps(decisions, indent=1, sort_keys=True).encode()
    manifest = {
        "format": FORMAT,
        **header,
        "sources": parts.sources,
        "confirmed": parts.confirmed,
        "files": {n: sha256_bytes(b) for n, b in sorted(parts.files.items())},
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    parts.files[MANIFEST] = body
    parts.files[MANIFEST_HASH] = f"{sha256_bytes(body)}  {MANIFEST}\n".encode()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """The canonical ZIP of ``files``: the manifest first, then sorted names, stored, with
    fixed times and modes, so the same contents always give the same bytes."""
    rest = sorted(n for n in files if n not in (MANIFEST, MANIFEST_HASH))
    names = [MANIFEST_HASH, MANIFEST, *rest]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in names:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.create_system, info.external_attr = 3, 0o100600 << 16
            z.writestr(info, files[name])
    return buf.getvalue()


# -- verification -----------------------------------------------------------------------
@dataclass
class Verdict:
    ok: bool
    problems: list[str]
    checked: dict[str, int]


def verify_bundle(path: Path) -> Verdict:
    """Check a bundle offline; every problem found is named (the first ones first)."""
    data = Path(path).read_bytes()
    try:
        files = read_entries(data)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, KeyError, EOFError) as exc:
        return Verdict(False, [f"not a readable bundle: {exc}"], {})
    problems: list[str] = []
    manifest = _check_manifest(files, problems)
    if manifest is None:
        return Verdict(False, problems, {})
    _check_files(files, manifest, problems)
    n_records = _check_audit(files, problems)
    _check_clips(files, manifest, problems)
    if not problems:
        _check_layout(data, files, problems)
    checked = {
        "files": len(manifest["files"]),
        "sources": len(manifest["sources"]),
        "audit_records": n_records,
        "confirmed_clips": len(manifest["confirmed"]),
    }
    return Verdict(not problems, problems, checked)


def read_entries(data: bytes) -> dict[str, bytes]:
    """Every entry of the ZIP, its CRC checked; a name given twice is refused."""
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.filename in out:
                raise ValueError(f"{info.filename} is in the ZIP twice")
            try:
                out[info.filename] = z.read(info)
            except Exception as exc:  # noqa: BLE001 - a changed header byte can raise anything
                raise ValueError(f"entry {info.filename}: {exc}") from None
    return out


def _check_manifest(files: dict[str, bytes], problems: list[str]) -> dict[str, Any] | None:
    if MANIFEST not in files or MANIFEST_HASH not in files:
        problems.append(f"no {MANIFEST} or {MANIFEST_HASH}: not a facewatch evidence bundle")
        return None
    noted = files[MANIFEST_HASH].decode("utf-8", "replace").split(" ")[0]
    if noted != sha256_bytes(files[MANIFEST]):
        problems.append(f"{MANIFEST}: its SHA-256 is not the one in {MANIFEST_HASH}")
    try:
        manifest = json.loads(files[MANIFEST])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{MANIFEST}: not JSON ({exc})")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        problems.append(f"{MANIFEST}: not a {FORMAT} manifest")
        return None
    return manifest


def _check_files(files: dict[str, bytes], manifest: dict[str, Any], problems: list[str]) -> None:
    listed = manifest.get("files", {})
    for name, digest in sorted(listed.items()):
        if name not in files:
            problems.append(f"{name}: listed in the manifest, missing from the bundle")
        elif sha256_bytes(files[name]) != digest:
            problems.append(f"{name}: SHA-256 differs from the manifest (changed)")
    for name in sorted(set(files) - set(listed) - {MANIFEST, MANIFEST_HASH}):
        problems.append(f"{name}: in the bundle but not in the manifest")


def _jsonl(data: bytes, what: str, problems: list[str]) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{what}: not JSON lines ({exc})")
        return []


def _check_audit(files: dict[str, bytes], problems: list[str]) -> int:
    records = _jsonl(files.get("audit/records.jsonl", b""), "audit/records.jsonl", problems)
    chain = _jsonl(files.get("audit/chain.jsonl", b""), "audit/chain.jsonl", problems)
    links = {c.get("seq"): c for c in chain}
    for prev, link in zip(chain, chain[1:], strict=False):
        if link.get("seq") != prev.get("seq", 0) + 1 or link.get("prev_hash") != prev.get("hash"):
            problems.append(
                f"audit chain broken between records {prev.get('seq')} and {link.get('seq')}"
            )
    for r in records:
        where = f"audit record {r.get('seq')} ({r.get('action')})"
        if record_hash(r) != r.get("hash"):
            problems.append(f"{where}: its hash does not match its contents")
        linked = links.get(r.get("seq"))  # not ``link``: that one is a chain link above
        ours = (r.get("hash"), r.get("prev_hash"))
        if linked is None or (linked["hash"], linked["prev_hash"]) != ours:
            problems.append(f"{where}: not in the included chain")
    return len(records)


def _check_clips(files: dict[str, bytes], manifest: dict[str, Any], problems: list[str]) -> None:
    clips = {c["sighting_id"]: c["clip"] for c in manifest.get("confirmed", [])}
    decisions = json.loads(files.get("decisions.json", b"[]") or b"[]")
    for d in decisions:
        if d.get("decision") == "confirmed":
            clip = clips.get(d.get("sighting_id"))
            if clip is None or clip not in files or not files[clip]:
                problems.append(f"confirmed sighting {d.get('sighting_id')}: no clip")


def _check_layout(data: bytes, files: dict[str, bytes], problems: list[str]) -> None:
    """Every byte of the ZIP: rebuilt from its contents, it must be byte for byte equal."""
    canonical = zip_bytes(files)
    if canonical == data:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(canonical, data, strict=False)) if a != b),
        min(len(canonical), len(data)),
    )
    problems.append(
        f"byte {at} of the ZIP ({_region(data, at)}) differs from the bundle as written"
    )


def _region(data: bytes, at: int) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = sorted(z.infolist(), key=lambda i: i.header_offset)
        for info in reversed(infos):
            if at >= info.header_offset:
                end = info.header_offset + len(info.FileHeader()) + info.compress_size
                if at < end:
                    return f"in the entry {info.filename}"
                break
    return "in the ZIP's directory"


# -- export ------------------------------------------------------------------------------
def export_bundle(book: CaseBook, ref: str, who: Actor, dest: Path) -> dict[str, Any]:
    """Write the case's bundle to ``dest``; audited before (the act) and after (its hash)."""
    case = book.require(ref, who, READ)
    dest = Path(dest)
    book.audit.append(who.name, "evidence.export", case=ref, bundle=dest.name)
    records, chain = case_records(book.audit, ref)
    outs, searched = case_searches(records)
    decisions = book.catalog.rows(
        "SELECT * FROM sighting_reviews WHERE case_ref = ? ORDER BY sighting_id", ref
    )
    parts = BundleParts()
    add_searches(parts, outs, searched)
    with tempfile.TemporaryDirectory() as scratch:
        add_clips(parts, decisions, Path(scratch))
    keep = ("case_ref", "reason", "authorised_by", "owner", "created_at", "grants")
    header = {"case": {k: case[k] for k in keep}, "exported_by": who.name, "exported_at": utcnow()}
    finish(parts, header, records, chain, decisions)
    data = zip_bytes(parts.files)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    digest = sha256_bytes(data)
    book.audit.append(who.name, "evidence.exported", case=ref, bundle=dest.name, sha256=digest)
    return {
        "case": ref,
        "bundle": str(dest),
        "sha256": digest,
        "bytes": len(data),
        "files": len(parts.files),
        "sources": len(parts.sources),
        "confirmed_clips": len(parts.confirmed),
        "audit_records": len(records),
    }
