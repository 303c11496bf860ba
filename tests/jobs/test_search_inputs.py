"""What `facewatch search` and `facewatch index` refuse before any work starts (exit 2, a
clear message, no Ray): numbers that are not numbers, an empty list name, a case reference
longer than the store keeps, and folders that hold no video."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(300)

CLIP = "video/short_hamilton_clip.mp4"
PURPOSE = ["--case", "T-2", "--reason", "input checks"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--fps", "nan"], "--fps"),  # click refuses it, and so would check_numbers
        (["--threshold", "nan"], "--threshold is a cosine similarity between -1 and 1"),
        (["--threshold", "2"], "--threshold is a cosine similarity between -1 and 1"),
        (["--list", ""], "a watch list needs a name"),
        (["--case", "C" * 513, "--reason", "r"], "--case may have at most 512 bytes"),
        (["--case", "案" * 200, "--reason", "r"], "--case may have at most 512 bytes"),  # 600
    ],
)
def test_bad_search_options_are_usage_errors(cli, data, args, words):
    options = args if "--case" in args else [*args, *PURPOSE]
    res = cli("search", str(data / CLIP), *options, "--out", "unused")
    assert res.exit_code == 2, res.output
    assert words in " ".join(res.output.split())


@pytest.mark.parametrize("command", ["search", "index"])
def test_a_folder_without_videos_is_a_usage_error(cli, tmp_path, command):
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a video")
    (folder / "clip.dav").write_bytes(b"\0" * 64)  # a DVR format nobody configured
    res = cli(command, str(folder), *PURPOSE, "--out", str(tmp_path / "out"))
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no video files found" in text and "search.video_extensions" in text


def test_an_empty_list_name_enrols_nobody(cli, data):
    res = cli("watchlist", "add", "Barack Obama", str(data / "known" / "obama.jpg"), "--list", "")
    assert res.exit_code == 2, res.output
    assert "a watch list needs a name" in res.output
    listed = cli("watchlist", "ls", "--json")
    assert listed.exit_code == 0 and '"people": []' in listed.stdout.replace("\n", "")


def test_check_numbers_refuses_what_click_might_let_through():
    from jobs.archive.search_setup import SetupError, check_numbers

    for bad in ({"fps": float("nan")}, {"fps": 0.0}, {"threshold": float("inf")}):
        with pytest.raises(SetupError):
            check_numbers(**bad)
    check_numbers(fps=2.0, threshold=-1.0)
