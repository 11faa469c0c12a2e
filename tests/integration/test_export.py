"""`caloforge export --format onnx`: the ONNX graph gives the pipeline's showers in GeV."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caloforge.cli import main
from caloforge.data.transforms import BoxCox, Log, Power, Transform
from caloforge.errors import CaloforgeError
from caloforge.export import MissingDependencyError, OnnxExportError, export_onnx
from caloforge.export.onnx import read_metadata
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import build_model
from caloforge.models.checkpoint import WEIGHTS, CheckpointError
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.training.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# One transform of each kind, so every inverse is exported once.
TRANSFORMS: dict[str, Transform] = {
    "gan3d": Power(0.85, scale=100.0),
    "gan3d-angle": Power(0.85, scale=50.0),
    "conv2d-g1": Log(eps=1e-4),
    "wgan-lhcb": BoxCox(lmbda=0.3),
}
FP32_TOLERANCE = 1e-4  # relative L2 error of the ONNX Runtime showers against the pipeline's


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_run(run_dir: Path, family: str) -> Path:
    """A run folder with one checkpoint of `family` (seeded random weights)."""
    bundle = build_model(family, seed=7)
    save_checkpoint(
        run_dir,
        step=1,
        epoch=0,
        bundle=bundle,
        transform=TRANSFORMS[family],
        geometry=bundle.config.resolved_geometry,
        training={},
        trainer_state={},
    )
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """family -> (run folder, exported ONNX file), made once for the module."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for family in TRANSFORMS:
        run = make_run(root / family, family)
        out[family] = (run, export_onnx(run, root / f"{family}.onnx"))
    return out


def session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_conditions(pipeline: ShowerPipeline, n: int, rng: np.random.Generator):
    """Conditions as `caloforge simulate` draws them for the pipeline's geometry."""
    geometry = pipeline.geometry
    drawn = sample_conditions(geometry, ConditionRanges.for_geometry(geometry), n, rng)
    return {name: drawn[name] for name in pipeline.condition_names}


@pytest.mark.parametrize("family", list(TRANSFORMS))
def test_onnx_runtime_gives_the_pipelines_showers_in_gev_at_any_batch_size(exported, family):
    run, path = exported[family]
    pipeline = ShowerPipeline.from_checkpoint(run)
    sess = session(path)
    rng = np.random.default_rng(11)
    for n, seed in ((1, 5), (7, 6)):  # the graph was traced at batch 2
        conditions = random_conditions(pipeline, n, rng)
        expected = pipeline(conditions, torch.Generator().manual_seed(seed)).showers
        noise = pipeline.generator.sample_noise(n, torch.Generator().manual_seed(seed))
        feed = {"noise": noise.numpy()} | {k: v.astype(np.float32) for k, v in conditions.items()}
        (found,) = sess.run(["showers"], feed)
        assert found.shape == expected.shape == (n, *pipeline.geometry.shape)
        assert found.dtype == np.float32 and found.min() >= 0.0
        error = np.linalg.norm(found - expected) / np.linalg.norm(expected)
        assert error < FP32_TOLERANCE, (family, n, error)


@pytest.mark.parametrize("family", list(TRANSFORMS))
def test_graph_has_named_inputs_a_dynamic_batch_and_metadata(exported, family):
    run, path = exported[family]
    pipeline = ShowerPipeline.from_checkpoint(run)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert not list(path.parent.glob(f"{path.name}.data"))  # self-contained: no external data

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in model.graph.input}
    batch = inputs["noise"][0]
    assert isinstance(batch, str) and batch  # symbolic, not a number
    assert inputs["noise"] == [batch, pipeline.generator.noise_size]
    for name in pipeline.condition_names:
        size = pipeline.geometry.condition(name).size
        assert inputs[name] == ([batch] if size == 1 else [batch, size])
    assert list(inputs) == ["noise", *pipeline.condition_names]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("showers", [batch, *pipeline.geometry.shape])
    ]

    meta = read_metadata(path)
    geometry = pipeline.geometry
    assert meta["family"] == family
    assert meta["geometry"] == geometry.name
    assert meta["units"] == "GeV"
    assert meta["precision"] == "fp32"
    assert meta["noise_distribution"] == pipeline.generator.noise_distribution
    assert meta["noise_size"] == str(pipeline.generator.noise_size)
    assert meta["shower_shape"] == ",".join(map(str, geometry.shape))
    assert meta["condition_names"].split(",") == list(pipeline.condition_names)
    units = [geometry.condition(n).unit for n in pipeline.condition_names]
    assert meta["condition_units"].split(",") == units
    assert Path(meta["source_checkpoint"]) == Path(pipeline.source).resolve()
    assert meta["caloforge_version"]
    assert f'"name": "{TRANSFORMS[family].name}"' in meta["transform"]


def test_noise_distribution_is_recorded_for_uniform_noise(exported):
    assert read_metadata(exported["conv2d-g1"][1])["noise_distribution"] == "uniform"
    assert read_metadata(exported["gan3d"][1])["noise_distribution"] == "normal"


def test_cli_exports_a_run_folder(exported, tmp_path, capsys):
    run, _ = exported["gan3d"]
    out = tmp_path / "sub" / "gen.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out
    # A status line as each phase starts, with the seconds since the start (no silent minutes)
    phases = ["tracing the gan3d generator to ONNX", f"writing {out}", "checking the written"]
    lines = [line for line in printed.err.splitlines() if line.startswith("caloforge export [")]
    assert [next(i for i, line in enumerate(lines) if p in line) for p in phases] == [0, 1, 2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["gen.onnx"]  # nothing partial
    (showers,) = session(out).run(
        None, {"noise": np.zeros((2, 200), np.float32), "energy": np.full(2, 50.0, np.float32)}
    )
    assert showers.shape == (2, 25, 25, 25)


def test_missing_and_corrupt_checkpoints_are_user_errors(tmp_path, capsys):
    out = tmp_path / "out" / "gen.onnx"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_onnx(tmp_path / "nope", out)
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err

    run = make_run(tmp_path / "run", "wgan-lhcb")
    (weights,) = run.glob(f"checkpoints/*/{WEIGHTS}")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        export_onnx(run, out)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_bad_output_paths_are_refused_and_leave_nothing(exported, tmp_path):
    run, _ = exported["wgan-lhcb"]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(CaloforgeError, match="is a directory"):
        export_onnx(run, folder)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(CaloforgeError, match="is a file"):
        export_onnx(run, a_file / "gen.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert not list(folder.iterdir())


def test_a_failure_while_writing_leaves_no_partial_file(exported, tmp_path, monkeypatch):
    run, _ = exported["wgan-lhcb"]

    def save_half_then_fail(model, path, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", save_half_then_fail)
    with pytest.raises(CaloforgeError, match="No space left on device"):
        export_onnx(run, tmp_path / "gen.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_graph_that_disagrees_with_the_model_is_not_kept(exported, tmp_path, monkeypatch):
    run, _ = exported["wgan-lhcb"]
    from caloforge.export import onnx as export_module

    real = export_module.run_onnx
    monkeypatch.setattr(export_module, "run_onnx", lambda s, i: real(s, i) * 1.01)
    with pytest.raises(OnnxExportError, match="disagrees"):
        export_onnx(run, tmp_path / "gen.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("package", ["onnx", "onnxruntime", "onnxscript"])
def test_a_missing_package_names_it_and_the_extra(exported, tmp_path, monkeypatch, package):
    run, _ = exported["wgan-lhcb"]
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    with pytest.raises(MissingDependencyError, match=rf"'{package}'.*caloforge\[onnx\]"):
        export_onnx(run, tmp_path / "gen.onnx")
    assert list(tmp_path.iterdir()) == []
