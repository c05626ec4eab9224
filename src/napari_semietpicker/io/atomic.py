"""Atomic file writes: a crash mid-write never leaves a half-written file behind.

Temporary files and folders are named ``.<name>.semietpicker-<host>-<pid>-*.tmp`` beside
their target, so that one left by a killed process is recognisable: the next write into
that folder removes those of this machine whose process is no longer running
(:func:`sweep_orphans`); a shared folder's files of other machines are left alone.
Written files get the mode an ordinary ``open()`` would give (the umask), or the mode of
the file they replace, not the 0600 of ``mkstemp``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_MARK = ".semietpicker-"
_ORPHAN = re.compile(r"^\..+" + re.escape(TEMP_MARK) + r"([A-Za-z0-9]+)-(\d+)-[^.]*\.tmp$")
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"
#: Backups kept of a file the project overwrites: ``<name>.bak``, ``<name>.bak2``, ...
MAX_BACKUPS = 20


def temp_prefix(path: Path) -> str:
    """The start of the name of this process's temporary files for ``path``."""
    return f".{path.name}{TEMP_MARK}{_HOST}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's) or we cannot tell: keep its files
    return True


def sweep_orphans(folder: str | Path) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by killed writers.

    Only names this module makes are touched, and only those of processes no longer
    running. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _ORPHAN.match(entry.name)
        if match is None or match.group(1) != _HOST or _process_alive(int(match.group(2))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s",
                 len(removed), folder)
    return removed


def current_umask() -> int:
    """The process's umask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode a write to ``path`` should leave: the existing file's, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def backup_path(path: Path) -> Path:
    """Where the next backup of ``path`` goes: the first free ``.bak``, ``.bak2``, ...

    Earlier backups are never overwritten, so a user's original survives any number of
    saves; past :data:`MAX_BACKUPS` the newest slot is reused (the oldest ones stay).
    """
    slots = _backup_slots(path)
    return next((slot for slot in slots if not slot.exists()), slots[-1])


def _backup_slots(path: Path) -> list[Path]:
    return [path.with_name(f"{path.name}.bak"),
            *(path.with_name(f"{path.name}.bak{i}") for i in range(2, MAX_BACKUPS + 1))]


def keep_backup(path: Path) -> Path | None:
    """Copy an existing ``path`` to its next backup, unless the newest backup equals it."""
    if not path.is_file():
        return None
    target = backup_path(path)
    newest = _newest_backup(path)
    if newest is not None and _same_bytes(newest, path):
        return newest
    shutil.copy2(path, target)
    return target


def _newest_backup(path: Path) -> Path | None:
    existing = [slot for slot in _backup_slots(path) if slot.exists()]
    return existing[-1] if existing else None


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` at once.

    With ``keep_previous`` an existing file is first copied to a numbered backup
    (:func:`backup_path`) so that an export never destroys the user's earlier file. On
    error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        mode = new_file_mode(path)
        yield tmp
        os.chmod(tmp, mode)
        if keep_previous:
            keep_backup(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, keep_previous: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        tmp.write_text(text)
