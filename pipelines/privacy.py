"""Everything facewatch creates is private to its user (0600 files, 0700 folders).

The home holds faces, names and the audit log; search outputs hold face thumbnails. A
process umask of 077, set when a command starts (before Ray, whose processes inherit it),
makes every file and folder facewatch, SQLite, milvus-lite and Ray create private without
a chmod at each place. An existing home that its group or other users can read or enter is
refused, with the folder and the fix, unless the operator says it is meant to be shared
(``--allow-shared-home`` / ``allow_shared_home: true``): never silently.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pipelines.errors import FacewatchError

logger = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


class SharedHomeError(FacewatchError, ValueError):
    """The home can be read or entered by other users; the message says how to fix it."""

    http_status = 500  # the server's own set-up: not the client's to fix


def private_umask() -> None:
    """Files and folders this process (and the Ray it starts) creates: 0600 and 0700."""
    os.umask(PRIVATE_UMASK)


def check_private_home(path: Path, allow_shared: bool = False) -> None:
    """Refuse an existing home its group or others may use, unless ``allow_shared``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return  # made 0700 when opened
    if not mode & 0o077:
        return
    if allow_shared:
        logger.warning("the home %s is shared (mode %04o), as allowed", path, mode)
        return
    raise SharedHomeError(
        f"the home {path} is open to other users (mode {mode:04o}), and it holds faces, "
        f"names and the audit log. Make it private: chmod -R go-rwx {path} "
        "(or, if it must be shared, pass --allow-shared-home / set allow_shared_home: true)"
    )
