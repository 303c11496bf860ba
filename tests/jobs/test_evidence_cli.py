"""``facewatch case`` and ``facewatch evidence`` from the terminal (typer's CliRunner, a
real home in tmp_path; no search, so the bundle holds the case's audit records only)."""

from __future__ import annotations

import json
import zipfile

import pytest


@pytest.mark.timeout(60)
def test_case_create_ls_export_and_verify(cli, tmp_path):
    made = cli("case", "create", "OP-9", "--reason", "fraud", "--authorised-by", "DI Shaw")
    assert made.exit_code == 0, made.output
    again = cli("case", "create", "OP-9", "--reason", "fraud", "--authorised-by", "DI Shaw")
    assert again.exit_code == 2 and "already exists" in again.output
    listed = cli("case", "ls", "--json")
    assert [c["case_ref"] for c in json.loads(listed.stdout)] == ["OP-9"]
    bundle = tmp_path / "OP-9.zip"
    out = cli("evidence", "export", "OP-9", "--out", str(bundle))
    assert out.exit_code == 0, out.output
    with zipfile.ZipFile(bundle) as z:
        records = [json.loads(x) for x in z.read("audit/records.jsonl").splitlines()]
    assert [r["action"] for r in records] == ["case.create", "evidence.export"]
    ok = cli("evidence", "verify", str(bundle))
    assert ok.exit_code == 0 and "bundle intact" in ok.output, ok.output
    data = bytearray(bundle.read_bytes())
    data[data.index(b"DI Shaw")] ^= 0x20  # "di Shaw": one changed byte in the manifest
    bundle.write_bytes(bytes(data))
    bad = cli("evidence", "verify", str(bundle))
    assert bad.exit_code == 1 and "NOT intact" in bad.output and "manifest.json" in bad.output
    missing = cli("evidence", "export", "NOPE-1", "--out", str(tmp_path / "x.zip"))
    assert missing.exit_code == 2 and "no case NOPE-1" in missing.output
