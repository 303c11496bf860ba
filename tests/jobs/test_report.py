"""The report's copies of watch-list and probe photos."""

from __future__ import annotations

from jobs.archive.report import copy_photo


def test_photos_of_the_same_name_from_two_searches_do_not_mix(tmp_path):
    """A reused --out: the second search's suspect.jpg must not be shown as the first's."""
    thumbs = tmp_path / "out" / "thumbs"
    thumbs.mkdir(parents=True)
    first, second = tmp_path / "a" / "suspect.jpg", tmp_path / "b" / "suspect.jpg"
    for path, content in ((first, b"first photo"), (second, b"second photo")):
        path.parent.mkdir()
        path.write_bytes(content)
    a, b = copy_photo(str(first), thumbs), copy_photo(str(second), thumbs)
    assert a != b and a.startswith("thumbs/list_suspect_") and a.endswith(".jpg")
    assert (tmp_path / "out" / a).read_bytes() == b"first photo"
    assert (tmp_path / "out" / b).read_bytes() == b"second photo"
    assert copy_photo(str(first), thumbs) == a  # the same photo again: the same copy
    assert copy_photo(str(tmp_path / "missing.jpg"), thumbs) == ""
