"""The `caloforge` command line: parses arguments and calls the package; nothing more.

A user's mistake (a `CaloforgeError`) prints one line `caloforge: error: ...` and exits with
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from caloforge import __version__
from caloforge.cli import files, generate, simulate, train, tune, validate
from caloforge.cli.common import Handler, parse_range
from caloforge.errors import CaloforgeError, one_line

__all__ = ["build_parser", "main", "parse_range"]


class _StoreOnce(argparse._StoreAction):
    """argparse's store, refusing an option of several values (`--data A B`) given twice
    with different values: argparse kept the last list alone, silently (`--data a.h5 --data
    b.h5` trained on b.h5). An option of one value keeps the last given, as is usual (a
    script's defaults, then the caller's choice)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given: dict[str, object] = getattr(parser, "given", {})
        several = self.nargs in ("+", "*", argparse.REMAINDER)
        if several and option_string and self.dest in given and given[self.dest] != values:
            parser.error(
                f"argument {'/'.join(self.option_strings)}: given twice "
                f"({_shown(given[self.dest])}, then {_shown(values)}); give it once with all "
                "its values"
            )
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def _shown(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


class _Parser(argparse.ArgumentParser):
    """The parser of caloforge and of each command (argparse makes the commands' parsers of
    the same class): an option of several values given twice is refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.given: dict[str, object] = {}
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="caloforge",
        description="Fast calorimeter shower simulation with deep generative models.",
    )
    parser.add_argument("--version", action="version", version=f"caloforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        simulate.add_simulate,
        files.add_convert,
        files.add_inspect,
        train.add_train,
        generate.add_generate,
        validate.add_validate,
        generate.add_export,
        generate.add_bench,
        tune.add_tune,
    ):
        add(sub)
    return parser


# The commands whose paths (or KEY=VALUE overrides) may also follow their options, as in
# `convert IN --binning X OUT`; argparse alone takes only the first run of them.
_TRAILING = {"convert": "input", "inspect": "files", "train": "overrides", "tune": "overrides"}
# Options taking a range, whose value may start with a minus sign (`--energy -5:10`,
# `--point -inf:0`), which argparse would otherwise read as another option.
_RANGE_OPTIONS = ("--energy", "--theta", "--point")
_NEGATIVE = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    joined: list[str] = []
    while words:
        word = words.pop(0)
        if word in _RANGE_OPTIONS and words and _NEGATIVE.match(words[0]):
            word = f"{word}={words.pop(0)}"
        joined.append(word)
    _refuse_empty_words(parser, joined)
    args, extra = parser.parse_known_args(joined)
    if extra:
        dest = _TRAILING.get(args.command)
        if dest is None or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, dest).extend(extra)
    _take_overrides_back(args)
    _refuse_folder_names(parser, args)
    return args


# An override, `training.max_steps=5`: `--data a.h5 training.max_steps=5` gives it to --data
# (which takes every word up to the next option), where it was read as a missing file.
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def _take_overrides_back(args: argparse.Namespace) -> None:
    data = getattr(args, "data", None)
    if args.command not in ("train", "tune") or not data:
        return
    overrides = [w for w in data if _OVERRIDE.match(w) and not os.path.lexists(w)]
    if overrides:
        args.data = [w for w in data if w not in overrides]
        args.overrides = [*overrides, *args.overrides]


def _refuse_folder_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A file to write named with a trailing slash (`-o out.h5/`) names a folder: it was
    written as a file `out.h5`."""
    for dest, option in (("output", "-o/--output"), ("json", "--json")):
        value = getattr(args, dest, None)
        if isinstance(value, str) and value.endswith(("/", os.sep)) and len(value) > 1:
            parser.error(
                f"argument {option}: '{value}' ends with '/', the name of a folder; "
                "expected the path of a file to write"
            )


def _refuse_empty_words(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """No option of caloforge takes an empty value: `-o ''` (an unset shell variable) would
    be the current folder to every path function (a training run written into it), and an
    empty name, device or label is never meant."""
    for index, word in enumerate(words):
        if word.startswith("-") and word.endswith("=") and len(word) > 1:
            option = word[:-1]
        elif word == "":
            before = words[index - 1] if index > 0 else ""
            option = before if before.startswith("-") else ""
        else:
            continue
        if option:
            parser.error(f"argument {option}: expected a value, found an empty string")
        parser.error("an empty string given as an argument; expected a path or a value")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    handler: Handler = args.handler
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that start ranks
    # SIGTERM (a batch system ending the job, `kill`) is handled as Ctrl-C: outputs in
    # progress are removed and workers ended. So is SIGHUP (the terminal or ssh session
    # closed: its partial was left to the next run), unless ignored (`nohup`).
    previous = signal.signal(signal.SIGTERM, _terminated)
    hangup = signal.getsignal(signal.SIGHUP)
    if hangup is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _terminated)
    stdout = sys.stdout
    try:
        if stdout is not None:  # None: started with standard output closed
            sys.stdout = _StandardOutput(stdout)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return handler(args)
    except _StandardOutputError as exc:
        # `caloforge inspect f.h5 | head -1`: the reader has what it wanted; quiet, with the
        # code of a process ended by SIGPIPE, as other tools in a pipe end. A full device:
        # one line. Either way what is left to print goes nowhere (not a second error at exit).
        _silence_standard_output()
        if exc.errno == errno.EPIPE:
            return 128 + signal.SIGPIPE
        print(f"caloforge: error: cannot write to standard output: {exc}", file=sys.stderr)
        return 2
    except CaloforgeError as exc:
        print(f"caloforge: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("caloforge: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # `ulimit -n` below what the command's files and workers need (partial outputs
            # are removed on the way out).
            import resource  # POSIX only: imported where an EMFILE says it is there

            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            print(
                f"caloforge: error: too many open files: this process may open {limit} "
                "(`ulimit -n`); raise the limit, or ask for fewer workers or processes",
                file=sys.stderr,
            )
            return 2
        # A path longer than the system allows fails at its first look (`Path.exists`
        # raises rather than answering no), wherever it is read; outputs are checked before.
        if exc.errno != errno.ENAMETOOLONG:
            raise
        name = os.fsdecode(exc.filename) if exc.filename is not None else "a path"
        shown = name if len(name) <= 60 else f"{name[:40]}...{name[-16:]}"
        print(
            f"caloforge: error: {one_line(shown)}: the name is too long for the file system "
            f"({len(os.fsencode(name))} bytes)",
            file=sys.stderr,
        )
        return 2
    except (MemoryError, RuntimeError) as exc:
        # A request too large for this machine (partial outputs are removed); torch says so
        # with a RuntimeError (OutOfMemoryError, or its CPU allocator's message).
        if not _out_of_memory(exc):
            raise
        print(
            "caloforge: error: out of memory; ask for less at once (a smaller --batch-size, "
            "fewer showers or a smaller geometry)",
            file=sys.stderr,
        )
        return 2
    finally:
        sys.stdout = stdout
        signal.signal(signal.SIGTERM, previous)
        if hangup is signal.SIG_DFL:
            signal.signal(signal.SIGHUP, hangup)


class _StandardOutputError(Exception):
    """Standard output could not be written (a closed pipe, a full device): not an `OSError`,
    so that no handler of an output file's errors takes it for one of its own."""

    def __init__(self, exc: OSError) -> None:
        self.errno = exc.errno
        super().__init__(exc.strerror or str(exc))


class _StandardOutput:
    """`sys.stdout` whose write errors raise `_StandardOutputError`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _StandardOutputError(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _StandardOutputError(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_standard_output() -> None:
    """Point standard output at /dev/null: the text still buffered is dropped at exit instead
    of failing again ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (captured in tests): nothing to drop
        pass


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    )


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """caloforge's own warnings (about the user's data or request) as one line, like its
    errors; other libraries' keep their origin, which is what makes them useful."""
    if category.__module__.split(".")[0] == "caloforge":
        print(f"caloforge: warning: {message}", file=file or sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
