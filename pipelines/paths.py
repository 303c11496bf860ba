"""Paths from users and from the disk, resolved without surprises.

``Path.resolve`` (Python 3.11) raises RuntimeError on a symbolic link loop, so one looping
link in a searched folder, an output folder or the media folder would abort a whole
search or retention run. ``resolved`` follows links as far as they go and never raises;
the caller's next step (opening the file, or checking that it stays inside a folder)
then fails for that one path, with a reason.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolved(path: Path | str) -> Path:
    """The absolute path with symbolic links followed as far as they go (a loop stops)."""
    return Path(os.path.realpath(path))
