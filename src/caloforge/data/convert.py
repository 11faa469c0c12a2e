"""Convert shower files: any readable format to the canonical one, or to CaloChallenge.

>>> convert(["EleEscan_1_1.h5", "EleEscan_1_2.h5"], "showers.h5")
>>> convert(["dataset_2_1.hdf5"], "ds2.h5", binning="binning_dataset_2.xml")
>>> convert(["showers.h5"], "cc.hdf5", to="calochallenge", binning="cc.xml")

Showers are streamed batch by batch; the output appears under its name only once complete,
so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from caloforge._arguments import check_integer, check_path
from caloforge._files import check_output
from caloforge.data.canonical import ShowerWriter, open_h5
from caloforge.data.formats import detect_format
from caloforge.data.io import expand_paths, open_showers
from caloforge.data.source import ShowerSource, iter_batches
from caloforge.errors import CaloforgeError, InputFileError

TARGETS = ("caloforge", "calochallenge")
CALOCHALLENGE = "calochallenge"

PathLike = str | os.PathLike[str]


def input_format(path: PathLike, format: str | None = None) -> str:
    """`format`, or the detected format of `path`.

    An HDF5 file that cannot be opened (truncated, corrupt) is reported as such here, before
    the formats' detection tries to open it.
    """
    if format is not None:
        return format
    if Path(path).is_file() and h5py.is_hdf5(path):
        open_h5(path).close()
    return detect_format(path)


def convert(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    format: str | None = None,
    to: str = "caloforge",
    binning: PathLike | None = None,
    batch_size: int = 1000,
    calibration: str | float | None = None,
    progress: bool = False,
) -> Path:
    """Convert `inputs` (files or globs of one geometry) to `output`; return its path.

    to="caloforge" writes a canonical file. to="calochallenge" writes a CaloChallenge HDF5
    file and its binning XML (see `write_calochallenge`), calibrated by `calibration`
    (None: "auto", each layer divided by its sampling fraction for grid geometries, so that
    E_tot / E_inc is near 1 as in the challenge's files; see `calibration_for`). `binning` is
    the binning XML of CaloChallenge inputs; for other inputs written as CaloChallenge it is
    where the output's XML goes (default: `output` with the suffix .xml).
    """
    if to not in TARGETS:
        raise CaloforgeError(f"unknown output format '{to}'; choose one of {', '.join(TARGETS)}")
    check_path("output", output)
    batch_size = check_integer("batch_size", batch_size, 1)
    if calibration is not None and to != CALOCHALLENGE:
        raise CaloforgeError("--calibration is for writing with --to calochallenge")
    files = expand_paths(inputs)
    check_output(output, inputs=files)
    format = _common_format(files, format)
    reads_binning = format == CALOCHALLENGE
    if binning is not None and not reads_binning and to != CALOCHALLENGE:
        raise CaloforgeError(
            "--binning is for reading CaloChallenge files or writing with --to calochallenge"
        )
    if to == CALOCHALLENGE and not reads_binning:
        xml = Path(output).with_suffix(".xml") if binning is None else Path(binning)
        check_output(xml, inputs=files, option="--binning")  # the XML written
        _refuse_replacing_other_than_binning(xml, given=binning is not None)
    options = {"binning": binning} if reads_binning and binning is not None else {}
    source = open_showers(files, format, **options)
    try:
        if len(source) == 0:
            raise InputFileError(source.path, "holds no showers; there is nothing to convert")
        if to == CALOCHALLENGE:
            from caloforge.data.formats.calochallenge import write_calochallenge

            binning_out = None if reads_binning else binning
            write_calochallenge(
                source,
                output,
                binning_out,
                batch_size=batch_size,
                calibration="auto" if calibration is None else calibration,
                progress=progress,
            )
        else:
            write_canonical(source, output, batch_size=batch_size, progress=progress)
    finally:
        source.close()
    return Path(output)


def write_canonical(
    source: ShowerSource, output: PathLike, *, batch_size: int = 1000, progress: bool = False
) -> None:
    """Stream `source` into a new canonical file at `output`."""
    from tqdm import tqdm

    with (
        ShowerWriter(
            output, source.geometry, producer="caloforge convert", expected=len(source)
        ) as writer,
        tqdm(
            total=len(source),
            unit="shower",
            desc=f"writing {Path(output).name}",
            disable=not progress,
        ) as bar,
    ):
        for batch in iter_batches(source, batch_size):
            writer.write(batch)
            bar.update(len(batch))


def _common_format(files: Sequence[Path], format: str | None) -> str:
    """`format`, or the format detected in every file: inputs of different formats are
    refused by name rather than read as the first one's (which reported the second file as
    corrupt)."""
    if format is not None:
        return format
    found = [input_format(f) for f in files]
    for path, name in zip(files[1:], found[1:], strict=True):
        if name != found[0]:
            raise InputFileError(
                path,
                "inputs of different formats cannot be converted together",
                expected=f"format '{found[0]}' like {files[0]}",
                found=f"format '{name}' (convert each format separately)",
            )
    return found[0]


def _refuse_replacing_other_than_binning(xml: Path, *, given: bool) -> None:
    """The binning XML written with --to calochallenge (the path given to --binning, else the
    output's with .xml) may replace an earlier binning XML, never another file: --binning
    names an input everywhere else, and `--binning showers.h5` replaced the showers."""
    if not xml.exists() or xml.is_dir():
        return  # a folder is refused by check_output
    from caloforge.data.formats.calochallenge import read_binning

    try:
        read_binning(xml)
    except CaloforgeError:
        label = f"--binning {xml}" if given else f"{xml} (the binning XML beside the output)"
        raise CaloforgeError(
            f"{label}: exists and is not a CaloChallenge binning XML; the binning "
            "written with --to calochallenge would replace it (choose a new path)"
        ) from None
