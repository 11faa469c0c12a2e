"""ShowerPipeline: a checkpoint turned into showers in GeV, seeded, checked, on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caloforge.data.transforms import Log
from caloforge.devices import resolve_device
from caloforge.errors import CaloforgeError, ConditionError
from caloforge.generation.pipeline import (
    EDGE_MARGIN,
    GeneratedShowers,
    ShowerPipeline,
    training_ranges,
)
from caloforge.models.checkpoint import (
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
)
from model_files import random_checkpoint

N = 6
CONDITIONS: dict[str, dict[str, np.ndarray]] = {
    "gan3d": {"energy": np.linspace(10.0, 400.0, N)},
    "wgan-lhcb": {
        "energy": np.linspace(2.0, 80.0, N),
        "momentum": np.stack(
            [np.linspace(-3, 3, N), np.linspace(1, -1, N), np.linspace(2, 80, N)], axis=1
        ),
        "point": np.stack([np.linspace(-4, 4, N), np.linspace(3, -3, N)], axis=1),
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_checkpoint(
    run_dir: Path, family: str, transform: Any = None, training: dict[str, Any] | None = None
) -> Path:
    """A checkpoint of `family` with random (seeded) weights; returns its folder."""
    return random_checkpoint(run_dir, family, seed=3, transform=transform, training=training)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: make_checkpoint(root / family, family) for family in CONDITIONS}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_bias(pipeline: ShowerPipeline) -> torch.Tensor:
    """The bias of the wgan-lhcb generator's first (dense) layer."""
    dense = pipeline.generator.get_submodule("dense")
    assert isinstance(dense, torch.nn.Linear)
    return dense.bias


@pytest.mark.parametrize("family", sorted(CONDITIONS))
def test_showers_are_the_generator_output_brought_back_to_gev(checkpoints, family):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints[family])
    out = pipeline(CONDITIONS[family], generator=seeded(5))

    assert isinstance(out, GeneratedShowers)
    assert out.showers.shape == (N, *pipeline.geometry.shape)
    assert out.showers.dtype == np.float32
    assert np.isfinite(out.showers).all() and (out.showers >= 0).all()
    assert not pipeline.generator.training
    for name, values in CONDITIONS[family].items():
        np.testing.assert_array_equal(out.conditions[name], values)

    # By hand: the same noise through the same generator, then the inverse transform.
    checkpoint = load_checkpoint(checkpoints[family])
    generator = checkpoint.bundle.generator.eval()
    noise = generator.sample_noise(N, seeded(5))
    with torch.no_grad():
        conditions = {
            k: torch.as_tensor(v, dtype=torch.float32) for k, v in CONDITIONS[family].items()
        }
        raw = generator(noise, conditions)
    expected = checkpoint.transform.inverse(raw).clamp_min(0).numpy()
    assert expected.sum() > 0  # the comparison is not of two blank images
    np.testing.assert_allclose(out.showers, expected, rtol=1e-5, atol=1e-9)
    # ... which is not the preprocessed output: the transform was undone.
    assert not np.allclose(out.showers, raw.numpy())


@pytest.mark.parametrize("family", sorted(CONDITIONS))
def test_same_generator_seed_same_showers_other_seed_other_showers(checkpoints, family):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints[family])
    first = pipeline(CONDITIONS[family], generator=seeded(1)).showers
    again = pipeline(CONDITIONS[family], generator=seeded(1)).showers
    other = pipeline(CONDITIONS[family], generator=seeded(2)).showers
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_the_global_rng_is_neither_used_nor_moved(checkpoints):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints["gan3d"])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = pipeline(CONDITIONS["gan3d"], generator=seeded(1)).showers
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    b = pipeline(CONDITIONS["gan3d"], generator=seeded(1)).showers
    np.testing.assert_array_equal(a, b)


def test_zero_showers_give_an_empty_result(checkpoints):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints["gan3d"])
    out = pipeline({"energy": np.zeros(0)}, generator=seeded(0))
    assert out.showers.shape == (0, 25, 25, 25) and len(out) == 0


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"point": np.zeros((N, 2))}, r"needs condition\(s\) \['momentum'\]"),
        (
            {"momentum": np.ones((N, 3)), "point": np.zeros((N - 1, 2))},
            "one length n",
        ),
        ({"momentum": np.ones((N, 2)), "point": np.zeros((N, 2))}, "condition 'momentum'"),
        ({"momentum": np.full((N, 3), np.nan), "point": np.zeros((N, 2))}, "NaN or infinite"),
    ],
)
def test_missing_or_malformed_conditions_are_refused(checkpoints, conditions, message):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints["wgan-lhcb"])
    with pytest.raises(ConditionError, match=message):
        pipeline(conditions, generator=seeded(0))


def test_a_model_producing_nan_is_a_clear_error(checkpoints):
    pipeline = ShowerPipeline.from_checkpoint(checkpoints["wgan-lhcb"])
    with torch.no_grad():
        dense_bias(pipeline).fill_(float("nan"))
    with pytest.raises(CaloforgeError, match=rf"NaN or infinite cell energies in {N} of {N}"):
        pipeline(CONDITIONS["wgan-lhcb"], generator=seeded(0))


def test_an_inverse_transform_that_overflows_is_caught(tmp_path):
    # log(1 + x / eps) inverted: y of ~1000 gives exp(1000) = inf in float32.
    folder = make_checkpoint(tmp_path / "run", "wgan-lhcb", transform=Log(eps=1e-5))
    pipeline = ShowerPipeline.from_checkpoint(folder)
    with torch.no_grad():
        dense_bias(pipeline).fill_(1e4)
    with pytest.raises(CaloforgeError, match="NaN or infinite"):
        pipeline(CONDITIONS["wgan-lhcb"], generator=seeded(0))


def test_corrupt_weights_are_a_clear_error(tmp_path):
    folder = make_checkpoint(tmp_path / "run", "wgan-lhcb")
    weights = folder / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as an interrupted copy
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: unreadable weights"):
        ShowerPipeline.from_checkpoint(folder)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        ShowerPipeline.from_checkpoint(tmp_path / "run")  # a run folder resolves to it


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ShowerPipeline.from_checkpoint(tmp_path / "nothing")


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CaloforgeError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(CaloforgeError, match="unsupported device 'meta'"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_names_what_is_missing(checkpoints, device):
    expected = "built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
    with pytest.raises(CaloforgeError, match=expected):
        resolve_device(device)
    with pytest.raises(CaloforgeError, match=f"device '{device}' requested"):
        ShowerPipeline.from_checkpoint(checkpoints["gan3d"], device=device)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("auto") == torch.device("cuda:0")
    with pytest.raises(CaloforgeError, match=r"only 1 CUDA GPU\(s\) are visible"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda:1")  # torchrun's GPU


@pytest.mark.gpu
@pytest.mark.parametrize("family", sorted(CONDITIONS))
def test_cuda_gives_the_showers_of_the_cpu(checkpoints, family):
    on_cpu = ShowerPipeline.from_checkpoint(checkpoints[family], device="cpu")
    on_gpu = ShowerPipeline.from_checkpoint(checkpoints[family], device="cuda")
    assert next(on_gpu.generator.parameters()).is_cuda
    a = on_cpu(CONDITIONS[family], generator=seeded(4)).showers
    b = on_gpu(CONDITIONS[family], generator=seeded(4)).showers  # CPU noise, same draws
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-4 * float(a.max()))


def test_training_ranges_are_read_per_condition_and_component():
    config = {
        "training": {
            "condition_ranges": {
                "energy": [1.0, 50.0],
                "point": [[-5.0, 5.0], [-2.0, 2.0]],
                "momentum": [[-9, 9], [-9, 9], [0, 50]],
            }
        }
    }
    ranges = training_ranges(config)
    assert ranges["energy"] == ((1.0, 50.0),)
    assert ranges["point"] == ((-5.0, 5.0), (-2.0, 2.0))
    assert training_ranges({"training": {}}) == {} and training_ranges({}) == {}
    with pytest.raises(CheckpointError, match="'energy' must be"):
        training_ranges({"training": {"condition_ranges": {"energy": "10 to 50"}}})


def test_outside_training_range_marks_showers_but_not_derived_conditions(checkpoints):
    checkpoint = load_checkpoint(checkpoints["wgan-lhcb"])
    pipeline = ShowerPipeline(
        checkpoint.bundle.generator,
        checkpoint.transform,
        checkpoint.geometry,
        training_ranges={
            "energy": ((1.0, 50.0),),
            "point": ((-5.0, 5.0), (-2.0, 2.0)),
            "momentum": ((0.0, 0.0),),  # derived: never checked
        },
    )
    masks = pipeline.outside_training_range(CONDITIONS["wgan-lhcb"])
    assert sorted(masks) == ["energy", "point"]
    np.testing.assert_array_equal(masks["energy"], CONDITIONS["wgan-lhcb"]["energy"] > 50)
    y = CONDITIONS["wgan-lhcb"]["point"][:, 1]
    np.testing.assert_array_equal(masks["point"], np.abs(y) > 2)


def test_training_range_edges_allow_a_sample_s_shortfall(checkpoints):
    """The recorded range is the training sample's edges: just beyond them (under
    EDGE_MARGIN of the width) is inside, further out is not."""
    checkpoint = load_checkpoint(checkpoints["gan3d"])
    pipeline = ShowerPipeline(
        checkpoint.bundle.generator,
        checkpoint.transform,
        checkpoint.geometry,
        training_ranges={"energy": ((10.0, 200.0),)},
    )
    slack = EDGE_MARGIN * 190.0
    energy = np.array([10.0 - 2 * slack, 10.0 - 0.5 * slack, 100.0, 200.0 + 0.5 * slack])
    energy = np.append(energy, 200.0 + 2 * slack)
    masks = pipeline.outside_training_range({"energy": energy})
    np.testing.assert_array_equal(masks["energy"], [True, False, False, False, True])
