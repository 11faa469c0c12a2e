"""Output files that never look complete before they are, and never replace what they must not.

Everything caloforge writes goes to a temporary name beside the final one and is renamed
into place only when it is whole; a crash or an error leaves no file under the final name.
The temporary name is `.NAME.partial-PID`: one left behind by a process that no longer runs
(killed by SIGKILL, a power cut) is removed by the next run that writes in that folder.

`check_output` refuses, before any work, an output that could not be written (a folder in
the way, a parent that is a file, no permission) or that is one of the inputs; `FolderLock`
keeps a second process out of a folder in use; `os_error_text` says what a failed write met
(a full disk, a quota, no permission) in one line.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from caloforge.errors import OutputError

PathLike = str | os.PathLike[str]


CACHE_ENVIRONMENT = "CALOFORGE_CACHE_DIR"


def cache_root() -> Path:
    """caloforge's cache (the compiled Geant4 application, int8 choices): $CALOFORGE_CACHE_DIR,
    else $XDG_CACHE_HOME/caloforge, else ~/.cache/caloforge."""
    if os.environ.get(CACHE_ENVIRONMENT):
        return Path(os.environ[CACHE_ENVIRONMENT])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "caloforge"


def partial_path(final: PathLike) -> Path:
    """The temporary name for `final` (same folder, so the rename is atomic); the stale
    partials of `final` that dead processes left are removed first."""
    final = Path(final)
    remove_stale_partials(final)
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def through_link(final: PathLike) -> Path:
    """The file that writing `final` replaces: where a symbolic link points (the rename
    would otherwise put a file in the link's place, and the file linked to would keep its
    old contents), else `final` itself."""
    final = Path(final)
    return Path(os.path.realpath(final)) if final.is_symlink() else final


def commit(partial: Path, final: PathLike) -> None:
    """Move a finished temporary file into place, atomically."""
    os.replace(partial, final)


def discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)


@contextmanager
def atomic_output(final: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to `final` only if the block succeeds.

    A write that fails on the file system (full disk, no permission) becomes an
    `OutputError` naming `final`; the temporary file is removed in every case.
    """
    final = through_link(check_output(final))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{final}: cannot create its folder ({os_error_text(exc)})") from None
    partial = partial_path(final)
    try:
        yield partial
        commit(partial, final)
    except OSError as exc:
        discard(partial)
        if not is_write_failure(exc):
            raise
        raise OutputError(f"{final}: could not be written ({os_error_text(exc)})") from None
    except BaseException:
        discard(partial)
        raise


def copy_file(source: Path, target: Path) -> None:
    """Copy a file's bytes and permissions; in the kernel where it can (copy_file_range:
    no pass through this process, and on file systems that share blocks, no copy at all)."""
    with source.open("rb") as src, target.open("wb") as dst:
        size = os.fstat(src.fileno()).st_size
        try:
            copied = 0
            while copied < size:
                step = os.copy_file_range(src.fileno(), dst.fileno(), size - copied)
                if step == 0:
                    break
                copied += step
            if copied < size:
                raise OSError(errno.EIO, "copy ended early")
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, 1 << 20)
    shutil.copymode(source, target)


# --- stale partials ---------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_PARTIAL = re.compile(r"^\..+\.partial-(\d+)$")


def remove_stale_partials(final: PathLike) -> list[Path]:
    """Remove the `.NAME.partial-PID` files and folders beside `final` (any NAME) whose
    process is gone: what a killed run left where this one writes."""
    final = Path(final)
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


# --- checks before writing --------------------------------------------------------------------
def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same real path (through links), or the same
    inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    final: PathLike, *, inputs: Iterable[PathLike] = (), folder: bool = False, option: str = ""
) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Refused: a file path that is an existing folder (or, `folder=True`, a folder path that is
    an existing file); an existing device, pipe or socket; a path below a file; a location
    without write permission; a path that is one of `inputs` (compared through links).
    `option` names the flag in the message ("-o", "--out"). Returns `final` as a Path.
    """
    label = f"{option} {final}" if option else str(final)
    if str(final) == "-":  # the usual name of standard output: a file named '-' surprised
        raise OutputError(
            f"{label}: standard output is not written to; expected the path of a file (for "
            "a file named '-', its whole path)"
        )
    final = Path(final)
    _check_name_lengths(final, label)
    if final.is_symlink():
        try:
            os.stat(final)
        except OSError as exc:  # a dangling link is written through; a loop has no end
            if exc.errno == errno.ELOOP:
                raise OutputError(
                    f"{label}: is a symbolic link that loops (it never reaches a file); "
                    "expected the path of a file to write, or a link to one"
                ) from None
    if not folder and final.is_dir():
        raise OutputError(f"{label}: is a folder; expected the path of a file to write")
    if final.exists() and not final.is_dir() and not final.is_file():
        # A device or a pipe (-o /dev/null): the rename into place would replace it.
        raise OutputError(
            f"{label}: is a device, pipe or socket, not a regular file; expected the path of "
            "a file to write"
        )
    if folder and final.exists() and not final.is_dir():
        raise OutputError(f"{label}: is a file; expected a folder (existing or to create)")
    for path in inputs:
        if same_file(path, final) or (folder and _inside(Path(path), final)):
            raise OutputError(
                f"{label}: the output would overwrite an input file ({path}); choose "
                "another output path"
            )
        for linked in hdf5_linked_files(path):
            if same_file(linked, final):
                raise OutputError(
                    f"{label}: the output would overwrite {linked}, whose showers the input "
                    f"{path} reads through an HDF5 external link or virtual dataset; choose "
                    "another output path"
                )
    parent = final.absolute() if folder and final.is_dir() else final.absolute().parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if parent.is_symlink() and not parent.exists():
        raise OutputError(
            f"{label}: cannot be created, {parent} is a symbolic link to nothing "
            f"({os.readlink(parent)}); expected a folder"
        )
    if not parent.is_dir():
        raise OutputError(f"{label}: cannot be created, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{label}: no permission to write in {parent}")
    return final


def hdf5_linked_files(path: PathLike, *, _seen: set[str] | None = None) -> list[Path]:
    """The other files an HDF5 file reads its data from: the targets of its external links
    and the sources of its virtual datasets, and theirs in turn (the file itself excluded).

    Replacing one of them replaces the input's showers as surely as replacing the input. A
    relative name is looked for as HDF5 looks for it: beside the linking file, else in the
    current folder. Not an HDF5 file, or one that cannot be opened: none (its reader names
    the problem).
    """
    seen = set() if _seen is None else _seen
    start = os.path.realpath(path)
    if start in seen or not os.path.isfile(start):
        return []
    seen.add(start)
    try:
        import h5py

        if not h5py.is_hdf5(start):
            return []
        names: list[str] = []
        with h5py.File(start, "r") as f:

            def look(name: str, link: object) -> None:
                if isinstance(link, h5py.ExternalLink):
                    names.append(link.filename)

            def virtual(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset) and obj.is_virtual:
                    names.extend(s.file_name for s in obj.virtual_sources())

            f.visititems_links(look)
            f.visititems(virtual)
    except (OSError, RuntimeError, ValueError, KeyError):
        return []
    found: list[Path] = []
    for name in dict.fromkeys(names):
        if name == ".":  # a virtual dataset of this very file
            continue
        beside = Path(start).parent / name
        target = beside if os.path.isabs(name) or beside.exists() else Path(name)
        if not target.exists() or same_file(target, start):
            continue
        found.append(target)
        found.extend(hdf5_linked_files(target, _seen=seen))
    return found


def check_report_folder(out: Path) -> None:
    """Refuse a report folder `--out` that is a file, or a folder holding something other
    than a report (a former report is validate's to replace)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    report = (out / "index.html").exists() and (out / "metrics.json").exists()
    if out.is_dir() and any(out.iterdir()) and not report:
        raise OutputError(
            f"{out}: the folder exists and does not hold a caloforge report "
            "(index.html and metrics.json); refusing to replace it"
        )


# What a partial's name adds to its final name: ".NAME.partial-PID", PID up to 7 digits (Linux).
_PARTIAL_EXTRA = len(".") + len(".partial-") + 7


def _check_name_lengths(final: Path, label: str) -> None:
    """Refuse a path longer than the file system allows, or with a name longer than it allows
    (the last with room for its partial's longer name): one line, instead of `OSError: File
    name too long` from the first look at the path."""
    shown = label if len(label) <= 60 else f"{label[:40]}...{label[-16:]}"
    whole = final.absolute()
    try:
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = 4096
    if len(os.fsencode(str(whole))) >= path_max:
        raise OutputError(
            f"{shown}: the path is {len(os.fsencode(str(whole)))} bytes long; this system "
            f"allows {path_max - 1}"
        )
    parts = whole.parts
    for index, part in enumerate(parts[1:], start=1):
        folder = Path(*parts[:index])
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        last = index == len(parts) - 1
        room = limit - _PARTIAL_EXTRA if last else limit
        size = len(os.fsencode(part))
        if size > room:
            name = part if len(part) <= 40 else f"{part[:20]}...{part[-12:]}"
            why = f" (its {limit}, less {_PARTIAL_EXTRA} for the temporary name)" if last else ""
            raise OutputError(
                f"{shown}: the name '{name}' is {size} bytes long; this file system allows "
                f"{room}{why}"
            )


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` itself (a folder output replacing an input)."""
    return same_file(path, folder)


# --- what a failed write met ------------------------------------------------------------------
# How HDF5 ("errno = 28"), Rust libraries such as safetensors ("os error 28") and Python
# ("[Errno 28]") write an errno into a message.
_ERRNO_IN_TEXT = re.compile(r"(?:errno\s*=\s*|os error |\[Errno )(\d+)")

# The system's own words for an errno (os.strerror: "No space left on device"), and for a few
# what they mean for the user.
_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EFBIG: "the file size limit was reached",
    errno.EISDIR: "a folder is in the way",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


_WRITE_FAILURES = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}
)


def error_number(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one HDF5 writes into its message."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    match = _ERRNO_IN_TEXT.search(str(exc))
    return int(match.group(1)) if match else None


def is_write_failure(exc: BaseException) -> bool:
    """Whether an error is the file system refusing a write (full, quota, size limit,
    permission, read-only, I/O error), as opposed to a bug or a missing input."""
    return error_number(exc) in _WRITE_FAILURES


def os_error_text(exc: BaseException) -> str:
    """A one-line reason for a failed file operation: 'No space left on device (disk full)',
    'Permission denied', ... or the error's first line."""
    number = error_number(exc)
    if number is not None and number > 0:  # the system's words, not HDF5's paragraph
        hint = _HINTS.get(number)
        return os.strerror(number) + (f" ({hint})" if hint else "")
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0].strip() if text else type(exc).__name__


# --- a folder one process at a time -----------------------------------------------------------
LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive lock on a folder (`FOLDER/.lock`), held while a process uses it.

    An `acquire` in another process raises `OutputError` naming the holder's process id.
    It is a POSIX record lock (`lockf`): the kernel drops it when the holder exits, however it
    exits, so a killed process never leaves a folder locked; within one process it does not
    conflict with itself.
    """

    def __init__(self, folder: PathLike, what: str) -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(
                f"{self.folder}: in use by another {self.what} (process {holder}); wait for "
                "it to end or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
