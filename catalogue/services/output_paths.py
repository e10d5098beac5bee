"""Where an export may write: never over anything but a regular file, and never half a file.

An export to a path writes a temporary file beside its target and moves it into place when
complete, so a reader never sees a partial file and an interrupted export leaves none.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path


class ExportError(ValueError):
    """The file cannot be written where asked (the message is one line, naming the path)."""


#: What a path that is not a regular file is, by its stat mode.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def export_target(out: str | Path) -> Path:
    """The file an export to ``out`` writes: ``out`` itself, or the file a symlink at ``out`` points to.

    Raises
    ------
    ExportError
        when that is something other than a regular file (a directory, a FIFO, a device),
        which an export never replaces, or when its directory does not exist.
    """
    path = Path(out)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists():
        mode = target.stat().st_mode
        for test, kind in _FILE_KINDS:
            if test(mode):
                where = f"{out} (-> {target})" if target != path else str(out)
                raise ExportError(f"cannot write {where}: it is {kind}, not a regular file; give a file name")
    if not target.parent.is_dir():
        raise ExportError(f"cannot write {out}: the directory {target.parent} does not exist")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(out: str | Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to the file :func:`export_target` names for ``out``: beside it first, then moved into place,
    with the permissions the umask gives a new file.

    Raises
    ------
    ExportError
        when the file cannot be written there, with the reason in one line.
    """
    target = export_target(out)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
