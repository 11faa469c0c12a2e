"""Find Geant4 and compile caloforge's Geant4 application against it, once, into a cache.

Where Geant4 comes from, in this order:

1. the user's own installation: `geant4-config` on the PATH gives the compiler flags, the
   libraries and the datasets. With its datasets present, a standard physics list runs.
2. the `calzone` wheel (`pip install caloforge[geant4]`), which ships Geant4 11.4's shared
   libraries but no headers and no data: the headers come from `CALOFORGE_GEANT4_INCLUDE`, a
   folder or the `geant4-<version>-include.tgz` archive that caloforge's developers keep
   beside the repository. Without data files only the data-free physics list can run.

The library is compiled on first use into caloforge's cache (`$CALOFORGE_CACHE_DIR`, default
`~/.cache/caloforge`) under a key of the source, the compiler, the flags and the Geant4
version, so a change of any of them builds anew and nothing stale is ever loaded. Two
processes building at once wait on one lock; the library appears under its final name only
when whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import util as importlib_util
from pathlib import Path

from caloforge._files import cache_root
from caloforge.errors import CaloforgeError

SOURCE = Path(__file__).with_name("app.cc")
INCLUDE_ENV = "CALOFORGE_GEANT4_INCLUDE"
CXX_FLAGS = ("-std=c++17", "-O2", "-fPIC")
# Geant4's data variables that its start-up checks even when no model reads data.
DATA_FREE_VARIABLES = ("G4LEDATA", "G4LEVELGAMMADATA", "G4ENSDFSTATEDATA")
_VERSION_TAG = re.compile(rb"\$Name: geant4-(\d+)-(\d+)(?:-patch-(\d+))?")


class Geant4NotFoundError(CaloforgeError):
    """No usable Geant4 (libraries, headers or compiler) on this machine."""


@dataclass(frozen=True)
class Geant4Installation:
    """Where Geant4 is and how to build against it.

    source: "geant4-config" or "calzone"; version: "11.4.0"; datasets: the data variables
    and their folders when every dataset is present (empty when running without data).
    """

    source: str
    version: str
    include_dir: Path
    compile_flags: tuple[str, ...]
    link_flags: tuple[str, ...]
    datasets: dict[str, str] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return bool(self.datasets)


def cache_dir() -> Path:
    return cache_root() / "geant4"


def find_geant4() -> Geant4Installation:
    """The Geant4 to use: `geant4-config`'s, else calzone's; `Geant4NotFoundError` if none."""
    config = shutil.which("geant4-config")
    if config is not None:
        return _from_geant4_config(config)
    return _from_calzone()


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Geant4NotFoundError(f"'{shlex.join(command)}' failed: {exc}") from None
    return done.stdout.strip()


def _from_geant4_config(config: str) -> Geant4Installation:
    version = _run([config, "--version"])
    prefix = Path(_run([config, "--prefix"]))
    cflags = tuple(shlex.split(_run([config, "--cflags"])))
    libs = tuple(shlex.split(_run([config, "--libs"])))
    lib_dirs = [flag[2:] for flag in libs if flag.startswith("-L")]
    # RPATH (not RUNPATH), which also serves the libraries' own dependencies.
    rpath = tuple(f"-Wl,--disable-new-dtags,-rpath,{d}" for d in lib_dirs)
    datasets: dict[str, str] = {}
    for line in _run([config, "--datasets"]).splitlines():
        parts = line.split()
        if len(parts) == 3:
            datasets[parts[1]] = parts[2]
    if not datasets or not all(Path(path).is_dir() for path in datasets.values()):
        datasets = {}
    include = next(
        (Path(flag[2:]) for flag in cflags if flag.startswith("-I") and "Geant4" in flag),
        prefix / "include" / "Geant4",
    )
    return Geant4Installation(
        source="geant4-config",
        version=version,
        include_dir=include,
        compile_flags=cflags,
        link_flags=libs + rpath,
        datasets=datasets,
    )


def _from_calzone() -> Geant4Installation:
    spec = importlib_util.find_spec("calzone")
    if spec is None or spec.origin is None:
        raise Geant4NotFoundError(
            "--engine geant4 needs Geant4: put your installation's geant4-config on the PATH, "
            "or install the Geant4 libraries of the calzone wheel with "
            "`pip install 'caloforge[geant4]'`"
        )
    libs_dir = Path(spec.origin).parent.parent / "calzone.libs"
    libraries = sorted(libs_dir.glob("libG4*.so*"))
    if not libraries:
        raise Geant4NotFoundError(f"{libs_dir}: no Geant4 libraries (libG4*.so) in calzone")
    version = _library_version(libs_dir)
    include = _calzone_headers(version)
    header_version = _header_version(include)
    if header_version != version:
        raise Geant4NotFoundError(
            f"{include}: the headers are Geant4 {header_version}, calzone's libraries "
            f"{version}; set {INCLUDE_ENV} to Geant4 {version}'s headers"
        )
    return Geant4Installation(
        source="calzone",
        version=version,
        include_dir=include,
        # calzone's libraries are built with the old libstdc++ string ABI.
        compile_flags=(f"-I{include}", "-D_GLIBCXX_USE_CXX11_ABI=0"),
        # RPATH (not RUNPATH) so that the libraries find each other when loaded by ctypes.
        link_flags=(*map(str, libraries), f"-Wl,--disable-new-dtags,-rpath,{libs_dir}"),
    )


def _library_version(libs_dir: Path) -> str:
    for library in sorted(libs_dir.glob("libG4run*.so*")):
        match = _VERSION_TAG.search(library.read_bytes())
        if match:
            return _version_text(match)
    raise Geant4NotFoundError(f"{libs_dir}: cannot tell the Geant4 version of its libraries")


def _header_version(include: Path) -> str:
    header = include / "G4Version.hh"
    match = _VERSION_TAG.search(header.read_bytes()) if header.is_file() else None
    if match is None:
        raise Geant4NotFoundError(f"{header}: not a Geant4 header folder (no version tag)")
    return _version_text(match)


def _version_text(match: re.Match[bytes]) -> str:
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    return f"{major}.{minor}.{patch}"


def _calzone_headers(version: str) -> Path:
    """The folder of Geant4 headers named by `CALOFORGE_GEANT4_INCLUDE`, unpacked if needed."""
    given = os.environ.get(INCLUDE_ENV)
    if not given:
        raise Geant4NotFoundError(
            f"calzone ships Geant4 {version}'s libraries without headers: set {INCLUDE_ENV} "
            f"to a folder of Geant4 {version} headers or to a geant4-{version}-include.tgz "
            "archive (caloforge's developers keep one in shared/geant4/)"
        )
    path = Path(given).expanduser()
    if path.is_dir():
        return _header_root(path)
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        return _header_root(_unpacked(path))
    raise Geant4NotFoundError(f"{INCLUDE_ENV}={given}: neither a folder nor a .tgz archive")


def _header_root(folder: Path) -> Path:
    """`folder` itself or the one folder inside it that holds G4Version.hh."""
    if (folder / "G4Version.hh").is_file():
        return folder
    found = sorted(folder.glob("*/G4Version.hh"))
    if len(found) == 1:
        return found[0].parent
    raise Geant4NotFoundError(f"{folder}: no G4Version.hh; not a Geant4 include folder")


def _unpacked(archive: Path) -> Path:
    digest = _file_digest(archive)[:16]
    target = cache_dir() / f"include-{digest}"
    if target.is_dir():
        return target
    with _locked(cache_dir() / "include.lock"):
        if target.is_dir():
            return target
        temporary = Path(tempfile.mkdtemp(prefix=".include-", dir=target.parent))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(temporary, filter="data")
            temporary.rename(target)
        except (OSError, tarfile.TarError) as exc:
            shutil.rmtree(temporary, ignore_errors=True)
            raise Geant4NotFoundError(f"{archive}: cannot unpack the headers ({exc})") from None
    return target


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compiler() -> str:
    """The C++ compiler: $CXX, else g++ or c++ on the PATH."""
    given = os.environ.get("CXX")
    cxx = shutil.which(given) if given else shutil.which("g++") or shutil.which("c++")
    if not cxx:
        named = f" (CXX={given} is not an executable)" if given else ""
        raise Geant4NotFoundError(
            f"--engine geant4 compiles a small C++ application on first use and needs a C++17 "
            f"compiler{named}: install g++ (Debian/Ubuntu: apt-get install g++) or set CXX"
        )
    return cxx


def build(
    installation: Geant4Installation, *, executable: bool = False, progress: bool = False
) -> Path:
    """Path of the compiled application (the shared library, or with `executable` the bare
    C++ event loop of the benchmarks), compiled now unless the cache has it."""
    cxx = compiler()
    compiler_version = _run([cxx, "--version"]).splitlines()[0]
    flags = [*CXX_FLAGS, *installation.compile_flags]
    if executable:
        flags.append("-DCF_BENCH_MAIN")
    else:
        flags.append("-shared")
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler_version.encode(), installation.version.encode()):
        key.update(part)
    key.update(repr((flags, installation.link_flags)).encode())
    name = "caloforge-g4-bench" if executable else "libcaloforge_g4.so"
    target = cache_dir() / key.hexdigest()[:20] / name
    if target.is_file():
        return target
    with _locked(cache_dir() / "build.lock"):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.partial-{os.getpid()}")
        command = [cxx, *flags, str(SOURCE), *installation.link_flags, "-o", str(partial)]
        if progress:
            print(f"caloforge: compiling the Geant4 application (once) into {target.parent}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            log = target.with_name(f"{name}.build.log")
            log.write_text(shlex.join(command) + "\n\n" + done.stderr)
            tail = "\n".join(done.stderr.strip().splitlines()[-12:])
            raise Geant4NotFoundError(
                f"compiling caloforge's Geant4 application against Geant4 "
                f"{installation.version} ({installation.source}) failed; full log in {log}:\n"
                f"{tail}"
            )
        partial.rename(target)
    return target


def data_free_environment() -> dict[str, str]:
    """Data variables pointing at empty stand-ins: Geant4's start-up checks them even when
    no model reads a data file (an unset G4ENSDFSTATEDATA aborts G4NuclideTable)."""
    root = cache_dir() / "no-data"
    env = {}
    for variable in DATA_FREE_VARIABLES:
        folder = root / variable
        folder.mkdir(parents=True, exist_ok=True)
        env[variable] = str(folder)
    (root / "G4ENSDFSTATEDATA" / "ENSDFSTATE.dat").touch()
    return env
