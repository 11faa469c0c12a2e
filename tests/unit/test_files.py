"""Output files: checks before writing, stale partials, write failures named, folder locks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caloforge._files import (
    FolderLock,
    atomic_output,
    check_output,
    os_error_text,
    partial_path,
    remove_stale_partials,
    same_file,
)
from caloforge.errors import OutputError


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_check_output_refuses_what_cannot_be_written(tmp_path: Path) -> None:
    folder, file = tmp_path / "folder", tmp_path / "file"
    folder.mkdir()
    file.write_text("x")
    with pytest.raises(OutputError, match="is a folder; expected the path of a file"):
        check_output(folder)
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        check_output(file, folder=True)
    with pytest.raises(OutputError, match=r"file is a file, not a folder"):
        check_output(file / "deeper" / "out.h5")
    with pytest.raises(OutputError, match="overwrite an input"):
        check_output(file, inputs=[file])
    assert check_output(tmp_path / "new" / "out.h5") == tmp_path / "new" / "out.h5"
    assert check_output(folder, folder=True) == folder


def test_check_output_refuses_a_folder_without_write_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, for whom every folder is writable: the check is what is tested.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=f"no permission to write in {tmp_path}"):
        check_output(tmp_path / "out.h5", option="-o")


def test_links_are_the_file_they_point_to(tmp_path: Path) -> None:
    target = tmp_path / "a.h5"
    target.write_text("x")
    (tmp_path / "soft.h5").symlink_to(target)
    os.link(target, tmp_path / "hard.h5")
    (tmp_path / "sub").mkdir()
    assert same_file(tmp_path / "soft.h5", target)
    assert same_file(tmp_path / "hard.h5", target)
    assert same_file(tmp_path / "sub" / ".." / "a.h5", target)
    assert not same_file(tmp_path / "other.h5", target)
    with pytest.raises(OutputError, match="overwrite an input"):
        check_output(tmp_path / "hard.h5", inputs=[target])


def test_stale_partials_go_live_ones_stay(tmp_path: Path) -> None:
    dead = dead_pid()
    stale = [tmp_path / f".out.h5.partial-{dead}", tmp_path / f".other.partial-{dead}"]
    for path in stale:
        path.write_text("x")
    (tmp_path / f".step-00000001.partial-{dead}").mkdir()
    live = tmp_path / f".out.h5.partial-{os.getppid()}"
    live.write_text("y")
    unrelated = tmp_path / "notes.partial-1"
    unrelated.write_text("z")
    removed = remove_stale_partials(tmp_path / "out.h5")
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])
    assert partial_path(tmp_path / "out.h5").name == f".out.h5.partial-{os.getpid()}"


def test_atomic_output_names_a_full_disk_and_removes_the_partial(tmp_path: Path) -> None:
    final = tmp_path / "out.json"
    full = r"out.json: could not be written \(No space left"
    with pytest.raises(OutputError, match=full), atomic_output(final) as partial:
        partial.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    # Not a write failure (a missing input, say): left as it is.
    with pytest.raises(FileNotFoundError), atomic_output(final):
        raise FileNotFoundError(errno.ENOENT, "gone")


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (OSError(errno.ENOSPC, "x"), "disk full"),
        (OSError(errno.EDQUOT, "x"), "quota"),
        (PermissionError(errno.EACCES, "x"), "Permission denied"),
        (OSError(errno.EROFS, "x"), "Read-only"),
        (RuntimeError("Can't write (file write failed: errno = 28, error message = ...)"), "full"),
        (OSError("something else\nsecond line"), "something else"),
    ],
)
def test_os_error_text_is_one_plain_line(error: BaseException, text: str) -> None:
    assert text in os_error_text(error)
    assert "\n" not in os_error_text(error)


def test_a_folder_lock_refuses_another_process_and_dies_with_it(tmp_path: Path) -> None:
    code = (
        "import sys, time; from caloforge._files import FolderLock; "
        "lock = FolderLock(sys.argv[1], 'training'); lock.acquire(); print('ready', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(
            OutputError, match=f"in use by another training \\(process {holder.pid}"
        ):
            FolderLock(tmp_path, "training").acquire()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with FolderLock(tmp_path, "training"):  # the kernel dropped the killed holder's lock
        pass
