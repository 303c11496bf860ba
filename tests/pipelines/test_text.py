"""The one rule for names, ids and list names: no control or bidi-override characters."""

from __future__ import annotations

import pytest

from pipelines.text import UnsafeTextError, check_text, shown

BAD = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"] + [
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
]


@pytest.mark.parametrize("ch", BAD, ids=[f"U+{ord(c):04X}" for c in BAD])
def test_control_and_bidi_characters_are_refused_and_named(ch):
    with pytest.raises(UnsafeTextError, match=f"U\\+{ord(ch):04X} at position 4"):
        check_text(f"Bob{ch}by", "a name")
    with pytest.raises(UnsafeTextError):
        check_text(f"why{ch}", "a reason", free_text=True)
    assert "\\" in shown(f"Bob{ch}") and ch not in shown(f"Bob{ch}")


def test_ordinary_names_in_any_script_pass():
    names = ["Zoë Ó'Brien-Łukasz", "山田 太郎", "محمد علي", "יוסי כהן", "O'Neil (Jr.)", "", None]
    for name in names:
        assert check_text(name, "a name") == name
        assert shown(name or "") == (name or "")


def test_free_text_may_hold_line_breaks_and_tabs_names_may_not():
    assert check_text("line one\n\tline two", "a reason", free_text=True)
    with pytest.raises(UnsafeTextError, match="U\\+000A"):
        check_text("two\nlines", "a name")
    assert shown("a\nb") == "a\\x0ab" and shown("a\nb", keep_lines=True) == "a\nb"
