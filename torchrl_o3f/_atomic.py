"""Files written whole or not at all: atomic writes, clear disk-full errors, stale temporaries.

Shared by the trainer's checkpoints and the dataset builder and loader. Every temporary file
or folder of the package carries a tag naming its writer (``o3ftmp-<pid>-<host>-``), so a
later run can tell the leftovers of a killed write (its writer is gone) from a write still in
progress in another process, and remove only the former (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from torchrl_o3f.errors import O3FError

__all__ = [
    "DiskFullError",
    "temporary_tag",
    "write_atomic",
    "remove_stale_temporaries",
    "file_sha256",
    "disk_full_error",
]

_TAG = re.compile(r"o3ftmp-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]*)-")
# what the package's writes were called before they were tagged: a checkpoint's temporary file
# (tempfile.mkstemp's 8 random characters) and the builder's and loader's temporary folders
_LEGACY = re.compile(r"^\..+\.pt\.[A-Za-z0-9_]{8}\.tmp$|^\.o3f-(build|cache)-")
LEGACY_AGE_S = 24 * 3600
"""Age after which an untagged temporary of an older version of the package counts as stale."""


class DiskFullError(O3FError, OSError):
    """A write failed for lack of space; the message names the file and the free space."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]


def temporary_tag() -> str:
    """The tag in the names of this process's temporary files (``o3ftmp-<pid>-<host>-``).

    Example:
        >>> temporary_tag().startswith(f"o3ftmp-{os.getpid()}-")
        True
    """
    return f"o3ftmp-{os.getpid()}-{_host()}-"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _human(n: int | None) -> str:
    if n is None:
        return "unknown"
    units = ("B", "KiB", "MiB", "GiB")
    value, unit = float(n), "TiB"
    for u in units:
        if value < 1024:
            unit = u
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def disk_full_error(err: BaseException, path: str | os.PathLike) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` and the free space if ``err`` is a full disk.

    Recognises ``ENOSPC``/``EDQUOT`` and torch's zip writer's ``unexpected pos`` (what
    ``torch.save`` reports when a write comes up short); returns ``None`` for anything else.

    Example:
        >>> e = disk_full_error(OSError(errno.ENOSPC, "No space left on device"), "a/b.pt")
        >>> "a/b.pt" in str(e) and "free" in str(e)
        True
        >>> disk_full_error(ValueError("x"), "a/b.pt") is None
        True
    """
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(err)
    full = full or "unexpected pos" in text or "No space left" in text
    if not full:
        return None
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    return DiskFullError(
        errno.ENOSPC,
        f"could not write {path}: no space left on the device ({_human(_free_bytes(folder))} "
        f"free in {folder}); free some space or write elsewhere (output_dir / root), then run "
        "again. The previous version of the file, if any, is intact",
    )


def write_atomic(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, keep_previous: bool = False
) -> Path:
    """Write a file atomically.

    ``write(f)`` fills a temporary file in the same directory, which is flushed to disk and
    renamed over ``path``. A crash or a kill never leaves a half-written file: the previous
    one stays intact until the new one is complete. A killed write leaves a tagged temporary
    that the next write into the folder removes (:func:`remove_stale_temporaries`).

    Args:
        path: the file to write.
        write: fills the open binary file it is given.
        keep_previous: rename the file being replaced to ``<stem>.prev<suffix>`` (e.g.
            ``latest.prev.pt``) instead of dropping it.

    Raises:
        DiskFullError: the device is full; the message names the file and the free space.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> write_atomic(path, lambda f: f.write(b"hi")).read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{temporary_tag()}", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 -> the user's umask
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as err:
        full = disk_full_error(err, path) if isinstance(err, Exception) else None
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full is not None:
            raise full from err
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def link_atomic(
    src: str | os.PathLike, dst: str | os.PathLike, *, keep_previous: bool = False
) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link, no second copy on disk), atomically.

    Falls back to an atomic byte copy where the file system has no hard links (or ``dst`` is
    on another device). A later :func:`write_atomic` of either name replaces that name only.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> a = write_atomic(os.path.join(d, "a.pt"), lambda f: f.write(b"x"))
        >>> b = link_atomic(a, os.path.join(d, "b.pt"))
        >>> os.path.samefile(a, b)
        True
    """
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{temporary_tag()}.link.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as source:
            return write_atomic(
                dst, lambda f: shutil.copyfileobj(source, f), keep_previous=keep_previous
            )
    if keep_previous and dst.exists():
        os.replace(dst, previous_path(dst))
    os.replace(tmp, dst)
    return dst


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`write_atomic` keeps the replaced version of ``path``.

    Example:
        >>> previous_path("run/checkpoints/latest.pt").name
        'latest.prev.pt'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_stale(entry: Path, now: float) -> bool:
    m = _TAG.search(entry.name)
    if m is not None:
        return m["host"] == _host() and not _alive(int(m["pid"]))
    if not _LEGACY.match(entry.name):
        return False
    try:
        return now - entry.lstat().st_mtime > LEGACY_AGE_S
    except OSError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike, *, prefixes: tuple[str, ...] = ()) -> list:
    """Remove the temporary files and folders of killed writes from ``folder``.

    A temporary is a hidden entry ending in ``.tmp`` (an atomic file write) or starting with
    one of ``prefixes`` (e.g. ``.o3f-build-``). It is stale when its tag names a process of
    this host that no longer runs; an untagged one named as the package named them before
    (``.<name>.pt.<random>.tmp``, ``.o3f-build-*``, ``.o3f-cache-*``) when it is older than
    :data:`LEGACY_AGE_S`; other files are never touched. Writes in progress, here or on other hosts
    of a shared file system, are left alone.

    Returns:
        The removed paths.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / ".latest.pt.o3ftmp-999999999-nohost-x.tmp").write_bytes(b"")
        >>> remove_stale_temporaries(d)  # another host's write: kept
        []
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        if not (name.endswith(".tmp") or any(name.startswith(p) for p in prefixes)):
            continue
        if not _is_stale(entry, now):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file's bytes.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"
        >>> _ = p.write_bytes(b"abc")
        >>> file_sha256(p)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
