"""What the command modules share."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, where it has one worth showing (not None or off);
    every command's parser uses it, so that `caloforge COMMAND --help` shows them all."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            return action.help
        if default == [] or "default" in (action.help or ""):  # said in the help's own words
            return action.help
        return super()._get_help_string(action)


def parse_range(text: str) -> tuple[float, float]:
    """'100:200' -> (100.0, 200.0); '150' -> (150.0, 150.0)."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH or VALUE, got '{text}'") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH or VALUE, got '{text}'")
    return (parts[0], parts[1])


SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes a signed 64-bit integer


def seed(text: str) -> int:
    """A --seed: an integer from 0 to 2**63 - 1 (numpy refuses a negative seed, torch one
    beyond 64 bits, each with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text}")
    return value
