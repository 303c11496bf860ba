"""One rule for the names, ids and list names people type: no control or bidi characters.

A name travels to terminals (``watchlist ls``), HTML reports, the review page and the audit
log. An ESC in a person's name can rewrite an operator's terminal; a right-to-left override
can make one name look like another in a report ("gnp.exe" shown as "exe.png"). So every
name, id, list name, case reference and location is refused if it holds:

- a C0 or C1 control character or DEL (Unicode category Cc);
- a bidirectional embedding, override or isolate (U+202A-U+202E, U+2066-U+2069);
- a line or paragraph separator (U+2028, U+2029).

Free text (a reason, a note) may also hold line breaks and tabs, and nothing else of these.
``shown`` makes any text safe to print (for data stored before this rule).
"""

from __future__ import annotations

import unicodedata

from pipelines.errors import FacewatchError

BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
)
SEPARATORS = frozenset("\u2028\u2029")
FREE_TEXT_ALLOWED = frozenset("\n\t")


class UnsafeTextError(FacewatchError, ValueError):
    """A name or text holds a control or bidirectional-override character."""


def _unsafe(ch: str) -> bool:
    return ch in BIDI_CONTROLS or ch in SEPARATORS or unicodedata.category(ch) == "Cc"


def check_text(value: str | None, what: str, free_text: bool = False) -> str | None:
    """``value`` unchanged, or ``UnsafeTextError`` naming the first bad character and where.
    ``free_text`` also allows line breaks and tabs (reasons, notes)."""
    if not value:
        return value
    allowed = FREE_TEXT_ALLOWED if free_text else frozenset()
    for i, ch in enumerate(value):
        if _unsafe(ch) and ch not in allowed:
            raise UnsafeTextError(
                f"{what} may not hold control or bidirectional-override characters "
                f"(U+{ord(ch):04X} at position {i + 1})"
            )
    return value


def shown(value: object, keep_lines: bool = False) -> str:
    """``value`` as text that is safe on a terminal: each unsafe character as ``\\xNN`` or
    ``\\uNNNN``, so nothing stored can move the cursor or reorder what is printed.
    ``keep_lines`` keeps line breaks (a message of several lines)."""
    text = str(value)
    keep = frozenset("\n") if keep_lines else frozenset()
    if not any(_unsafe(ch) and ch not in keep for ch in text):
        return text
    return "".join(
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        if _unsafe(ch) and ch not in keep
        else ch
        for ch in text
    )
