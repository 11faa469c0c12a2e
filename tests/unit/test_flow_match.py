"""flow-match: shapes on every geometry kind, exact energy bookkeeping, the preprocessing's
inverse, the solvers, learning, the EMA and save/load, on tiny models and data (training runs
and `caloforge generate`: tests/integration/test_flow_match_training.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from caloforge.data.io import open_showers
from caloforge.data.transforms import Identity
from caloforge.devices import Distributed
from caloforge.geometry import Condition, Geometry
from caloforge.models import build_model
from caloforge.models.base import ModelConfigError
from caloforge.models.checkpoint import load_checkpoint, save_model
from caloforge.models.flow_match import CellHead, FlowMatchGenerator, integrate
from caloforge.models.flow_match_layout import LayerLayout
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.simulation.run import simulate_to_file

TINY = {
    "energy_hidden": 16,
    "energy_blocks": 1,
    "shape_hidden": 32,
    "shape_blocks": 1,
    "energy_steps": 3,
    "shape_steps": 2,
    "fit_showers": 32,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clic.h5"
    simulate_to_file(path, geometry="clic-25", n=48, energy=(10.0, 200.0), seed=3, workers=1)
    return path


def tiny(geometry: str = "clic-25", seed: int = 0, **changes: object) -> FlowMatchGenerator:
    generator = build_model("flow-match", {**TINY, "geometry": geometry, **changes}, seed=seed)
    g = generator.generator
    assert isinstance(g, FlowMatchGenerator)
    return g


def batches(path: Path, batch_size: int = 16):
    source = open_showers(path)
    batch = source.take(np.arange(len(source)))
    showers = torch.as_tensor(batch.showers, dtype=torch.float32)
    conditions = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.conditions.items()}
    return [
        (showers[i : i + batch_size], {k: v[i : i + batch_size] for k, v in conditions.items()})
        for i in range(0, len(showers), batch_size)
    ]


def fitted(path: Path, **changes: object) -> FlowMatchGenerator:
    g = tiny(**changes)
    g.fit_preprocessing(batches(path), Distributed())
    return g


def drawn_conditions(g: FlowMatchGenerator, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    geometry = g.config.resolved_geometry
    drawn = sample_conditions(
        geometry, ConditionRanges.for_geometry(geometry), n, np.random.default_rng(seed)
    )
    return {k: torch.as_tensor(drawn[k], dtype=torch.float32) for k in g.condition_names}


@pytest.mark.parametrize(
    ("geometry", "names"),
    [
        ("clic-25", ("energy",)),
        ("clic-angle-51", ("energy", "theta")),
        ("lhcb-30", ("energy", "momentum", "point")),
    ],
)
def test_showers_have_the_geometrys_shape_and_conditions(geometry: str, names: tuple) -> None:
    g = tiny(geometry).eval()
    shape = g.config.resolved_geometry.shape
    assert g.condition_names == names and g.shower_shape == tuple(shape)
    layers = 1 if len(shape) == 2 else shape[2]
    # stage 1: log E_tot / E_p, each layer's energy fraction and hit count; stage 2: cells
    assert g.noise_size == 2 * layers + 1 + shape[0] * shape[1] * layers
    conditions = drawn_conditions(g, 3)
    noise = g.sample_noise(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        showers = g(noise, conditions)
    assert showers.shape == (3, *shape)
    assert torch.isfinite(showers).all() and (showers >= 0).all()


@pytest.mark.parametrize("sparsity", ["count", "band"])
def test_layers_sum_exactly_to_the_stage_one_energies(clic_file: Path, sparsity: str) -> None:
    g = fitted(clic_file, sparsity=sparsity).eval()
    assert g.prep.threshold > 0  # the data's smallest cell
    conditions = drawn_conditions(g, 6)
    with torch.no_grad():
        sample = g.sample(g.sample_noise(6, torch.Generator().manual_seed(2)), conditions)
    per_layer = sample.showers.double().sum(dim=(1, 2))  # (N, layer)
    assert (sample.layer_energy > 0).any()
    torch.testing.assert_close(per_layer, sample.layer_energy.double(), rtol=1e-6, atol=1e-12)
    hits = sample.showers[sample.showers > 0]
    assert float(hits.min()) >= float(g.prep.threshold) * (1 - 1e-6)  # the readout threshold


def test_cells_below_the_hit_fraction_are_empty_and_layers_still_sum(clic_file: Path) -> None:
    g = fitted(clic_file, hit_fraction=1e-3).eval()
    with torch.no_grad():
        sample = g.sample(
            g.sample_noise(4, torch.Generator().manual_seed(5)), drawn_conditions(g, 4)
        )
    cells = g.layout.to_layers(sample.showers).double()
    share = cells / sample.layer_energy.double().clamp_min(1e-30)[..., None]
    assert ((share == 0) | (share >= 1e-3 * (1 - 1e-6))).all()
    torch.testing.assert_close(
        cells.sum(dim=2), sample.layer_energy.double(), rtol=1e-6, atol=1e-12
    )


def test_preprocessing_inverts_on_real_showers(clic_file: Path) -> None:
    g = fitted(clic_file)
    showers, conditions = batches(clic_file)[0]
    prep, layout = g.prep, g.layout
    cells = layout.to_layers(showers)
    torch.testing.assert_close(layout.from_layers(cells), showers, rtol=0, atol=0)
    energy, hits = cells.sum(dim=2), prep.hit_counts(cells)
    features = prep.standardise_energy(prep.energy_features(energy, conditions["energy"], hits))
    raw = prep.unstandardise_energy(features)
    back = prep.layer_energies(raw, conditions["energy"])
    torch.testing.assert_close(back, energy, rtol=1e-4, atol=1e-7)
    assert torch.equal(prep.counts_from_features(raw, back), hits.to(back.dtype))
    uniform = torch.rand(cells.shape, generator=torch.Generator().manual_seed(0))
    restored = prep.cells_inverse(prep.cells_forward(cells, energy, uniform), energy, layout.mask)
    # Dequantised empty cells come back empty; hits above alpha come back, renormalised by
    # the few hits below alpha that do not.
    assert (restored[cells == 0] == 0).all()
    bright = cells >= 1e-4 * energy[..., None]
    torch.testing.assert_close(restored[bright], cells[bright], rtol=1e-3, atol=0)
    torch.testing.assert_close(restored.sum(dim=2), energy, rtol=1e-5, atol=1e-9)


def test_voxel_layers_of_unequal_size_round_trip() -> None:
    geometry = Geometry(
        name="voxels",
        shape=(10,),
        readout="voxels",
        conditions=(Condition("energy", "GeV"),),
        extra={"layers": [{"shape": [2, 3]}, {"shape": [4]}]},
    )
    layout = LayerLayout(geometry)
    assert (layout.n_layers, layout.layer_cells, layout.padded) == (2, 6, True)
    showers = torch.arange(20, dtype=torch.float32).reshape(2, 10) + 1
    layered = layout.to_layers(showers)
    assert layered[0, 1].tolist() == [7, 8, 9, 10, 0, 0]
    assert layout.mask.sum() == 10
    torch.testing.assert_close(layout.from_layers(layered), showers, rtol=0, atol=0)


@pytest.mark.parametrize("neighbours", [0, 1, 2])
def test_shape_field_input_equals_the_window_of_rows(neighbours: int) -> None:
    g = tiny(neighbours=neighbours)
    field, k = g.shape_net, neighbours
    rng = torch.Generator().manual_seed(1)
    x, own = torch.randn(3, 25, 625, generator=rng), torch.randn(3, 25, 2, generator=rng)
    rows = torch.cat([x, own], dim=2)
    padded = torch.nn.functional.pad(rows, (0, 0, k, k))
    window = torch.cat([padded[:, i : i + 25] for i in range(2 * k + 1)], dim=2)
    torch.testing.assert_close(field._input(x, own), field.input(window))


def test_each_layer_keeps_its_stage_one_number_of_brightest_cells(clic_file: Path) -> None:
    g = fitted(clic_file)
    prep, mask = g.prep, g.layout.mask
    prep.threshold.fill_(0.0)  # the count alone decides
    rng = torch.Generator().manual_seed(3)
    z = torch.randn(4, 25, 625, generator=rng)
    energy = torch.rand(4, 25, generator=rng) + 0.1
    energy[0, 3] = 0.0  # an empty layer stays empty whatever its count
    counts = torch.randint(1, 60, (4, 25), generator=rng).to(z.dtype)
    counts[0, 3] = 0.0
    cells = prep.cells_inverse(z, energy, mask, counts)
    assert torch.equal(prep.hit_counts(cells).to(z.dtype), counts)
    # the kept cells are the brightest of the flow's output
    order = torch.argsort(z[1, 7] * prep.cell_std[7] + prep.cell_mean[7], descending=True)
    kept = set(torch.nonzero(cells[1, 7]).squeeze(1).tolist())
    assert kept == set(order[: int(counts[1, 7])].tolist())
    torch.testing.assert_close(cells.sum(dim=2), energy, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("gap", [1.0, 2.0])
def test_floor_puts_empty_cells_below_the_faintest_hit_and_inverts(
    clic_file: Path, gap: float
) -> None:
    g = fitted(clic_file, empty="floor", empty_gap=gap)
    prep, mask = g.prep, g.layout.mask
    showers = batches(clic_file)[0][0]
    cells = g.layout.to_layers(showers)
    energy, counts = cells.sum(dim=2), prep.hit_counts(cells).to(cells.dtype)
    uniform = torch.rand(cells.shape, generator=torch.Generator().manual_seed(2))
    logits = prep.cell_logits(cells, energy, uniform)
    u = cells / energy.clamp_min(1e-30)[..., None]
    faintest = torch.where(cells > 0, u, torch.inf).amin(dim=2)
    layers = torch.nonzero((counts > 0) & (counts < 625))
    a = prep.offset
    back = (torch.sigmoid(logits.double()) - a) / (1 - 2 * a)  # the fractions trained on
    for n, layer in layers[:: max(1, len(layers) // 40)].tolist():
        empty = back[n, layer][cells[n, layer] == 0]
        hit = float(faintest[n, layer])
        # between 2 gap and gap decades below the faintest hit
        assert float(empty.max()) <= hit * 10**-gap * (1 + 1e-4)
        assert float(empty.min()) >= hit * 10 ** (-2 * gap) * (1 - 1e-4)
    restored = prep.cells_inverse(prep.cells_forward(cells, energy, uniform), energy, mask, counts)
    assert torch.equal(restored > 0, cells > 0)  # the counted brightest cells are the hits
    torch.testing.assert_close(restored, cells, rtol=1e-3, atol=1e-12)


def test_floor_and_below_need_the_learnt_counts() -> None:
    for empty in ("floor", "below"):
        with pytest.raises(ModelConfigError, match="empty"):
            tiny(empty=empty, sparsity="band")


def test_below_standardises_each_cell_by_its_hits_with_empties_under_them(clic_file: Path) -> None:
    gap = 6.0
    g = fitted(clic_file, empty="below", empty_gap=gap)
    prep, mask = g.prep, g.layout.mask
    showers = batches(clic_file, 48)[0][0]
    cells = g.layout.to_layers(showers)
    energy, counts = cells.sum(dim=2), prep.hit_counts(cells).to(cells.dtype)
    uniform = torch.rand(cells.shape, generator=torch.Generator().manual_seed(2))
    z = prep.cells_forward(cells, energy, uniform)
    hit = cells > 0
    assert float(z[~hit].max()) < -gap and float(z[~hit].min()) >= -gap - 1
    # hits sit at or above -gap: the few further below their cell's usual are raised to it
    clamped = hit & (z == -gap)
    assert float(z[hit].min()) >= -gap and int(clamped.sum()) < 0.01 * int(hit.sum())
    # the fit's own showers: each often-hit cell's hits average about 0 with unit spread
    often = hit.sum(dim=0) >= 30
    assert int(often.sum()) > 100
    mean = torch.where(hit, z, 0.0).sum(0)[often] / hit.sum(0)[often]
    assert float(mean.abs().median()) < 0.2
    restored = prep.cells_inverse(z, energy, mask, counts)
    assert torch.equal(restored > 0, hit)  # the hits rank above every empty cell of a layer
    torch.testing.assert_close(restored[~clamped], cells[~clamped], rtol=1e-3, atol=1e-12)
    assert bool((restored[clamped] >= cells[clamped]).all())


def test_below_shrinks_a_rarely_hit_cells_statistics_to_its_layers() -> None:
    g = tiny(empty="below")
    prep = g.prep
    shape = prep.cell_mean.shape
    hits = torch.zeros(shape, dtype=torch.float64)
    hits[0, 0], hits[0, 1] = 10_000.0, 0.0  # layer 0: cell 0 hit often, cell 1 never
    total = torch.zeros_like(hits)
    squares = torch.zeros_like(hits)
    total[0, 0], squares[0, 0] = -2.0 * 10_000, (4.0 + 0.25) * 10_000  # mean -2, spread 0.5
    prep._fit_hits(total, squares, hits)
    assert float(prep.cell_mean[0, 0]) == pytest.approx(-2.0, abs=0.01)
    assert float(prep.cell_std[0, 0]) == pytest.approx(0.5, abs=0.01)
    # the never-hit cell takes its layer's statistics (here cell 0's, the only hits)
    assert float(prep.cell_mean[0, 1]) == pytest.approx(-2.0, abs=1e-6)
    assert float(prep.cell_std[0, 1]) == pytest.approx(0.5, abs=1e-6)


def test_the_shape_skip_adds_a_per_cell_multiple_of_the_input() -> None:
    g = tiny(shape_skip=True)
    field = g.shape_net
    skip = field.skip
    assert skip is not None and skip.weight.abs().sum() > 0  # initialised as dense layers are
    rng = torch.Generator().manual_seed(6)
    x, own = torch.randn(2, 25, 625, generator=rng), torch.randn(2, 25, 2, generator=rng)
    t, shower = torch.tensor([0.2, 0.7]), torch.randn(2, 1 + g.n_features, generator=rng)
    field.skip = None
    plain = field(x, t, shower, own)
    field.skip = skip
    with torch.no_grad():
        skip.weight.zero_()
        skip.bias.copy_(torch.linspace(-1.0, 1.0, 625))  # cell c gains b_c times its input
    torch.testing.assert_close(field(x, t, shower, own), plain + x * skip.bias)


def test_the_cell_head_is_a_sum_of_tanh_steps_of_each_cells_own_value() -> None:
    head = CellHead(cells=3, units=2, times=1)
    with torch.no_grad():
        head.log_slope.copy_(torch.log(torch.tensor([[1.0, 2.0], [0.5, 1.0], [3.0, 1.0]])).T)
        head.time.weight.fill_(0.5)  # slopes grow as exp(t / 2) along the flow
    x = torch.tensor([[[0.3, -1.0, 2.0]]])  # (N 1, L 1, C 3)
    codes = torch.randn(1, 1, 5 * 3, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([[0.4]])
    c = codes.view(5, 3).T  # (cell, [offset, heights, centres])
    slopes = torch.tensor([[1.0, 2.0], [0.5, 1.0], [3.0, 1.0]]) * np.exp(0.2)
    expected = c[:, 0] + (c[:, 1:3] * torch.tanh(slopes * (x[0, 0, :, None] - c[:, 3:]))).sum(1)
    torch.testing.assert_close(head(x, codes, t)[0, 0], expected)


def test_the_cell_head_feeds_on_the_networks_codes_and_the_cells_own_values() -> None:
    g = tiny(shape_skip=True, shape_head=1)
    field = g.shape_net
    assert field.output.out_features == 625 * 3  # offset, height and centre per cell
    rng = torch.Generator().manual_seed(6)
    x, own = torch.randn(2, 25, 625, generator=rng), torch.randn(2, 25, 2, generator=rng)
    t, shower = torch.tensor([0.2, 0.7]), torch.randn(2, 1 + g.n_features, generator=rng)
    with torch.no_grad():
        v = field(x, t, shower, own)
        x2 = x.clone()
        x2[0, 3, 7] += 1.0  # one cell's own value: its velocity moves by more than a multiple
        v2 = field(x2, t, shower, own)
    assert torch.isfinite(v).all() and v.shape == x.shape
    changed = (v2 - v).abs() > 0
    assert changed[0, 3, 7] and changed[1].sum() == 0  # the other shower is untouched


def test_below_keeps_the_cells_furthest_above_their_own_empties() -> None:
    g = tiny(empty="below")
    prep = g.prep
    with torch.no_grad():
        prep.cell_mean.fill_(-12.0)
        prep.cell_mean[0, 0] = -1.0  # a core cell: bright when hit
        prep.cell_std.fill_(1.0)
    z = torch.full((1, 25, 625), -7.0)
    z[0, 0, 0] = -1.5  # the core cell, 1.5 of its spreads below its usual: still the brightest
    z[0, 0, 1] = 0.5  # a tail cell, a typical hit of its own
    z[0, 0, 2] = -0.5  # another
    energy = torch.ones(1, 25)
    counts = torch.full((1, 25), 2.0)
    out = prep.cells_inverse(z, energy, g.layout.mask, counts)
    # by fraction the core cell and cell 1 lead; by their own units cells 1 and 2 are hits,
    # and the brightest cell always stays
    assert out[0, 0, :3].gt(0).tolist() == [True, True, True]
    assert int(out[0, 0].gt(0).sum()) == 3
    counts[0, 0] = 1.0
    out = prep.cells_inverse(z, energy, g.layout.mask, counts)
    assert out[0, 0, :3].gt(0).tolist() == [True, True, False]


def test_midpoint_and_heun_integrate_a_linear_field_to_second_order() -> None:
    x0 = torch.ones(1, 1)
    exact = float(np.exp(-1.0))
    for solver in ("midpoint", "heun"):
        err = [
            abs(float(integrate(lambda x, t: -x, x0, n, solver)) - exact)  # type: ignore[arg-type]
            for n in (4, 8)
        ]
        assert 3.5 < err[0] / err[1] < 4.5, solver
    euler = [abs(float(integrate(lambda x, t: -x, x0, n, "euler")) - exact) for n in (4, 8)]
    assert 1.6 < euler[0] / euler[1] < 2.4


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"shape_skip": True, "empty": "floor"},
        {"shape_skip": True, "empty": "below"},
        {"shape_skip": True, "empty": "below", "shape_head": 1},
    ],
    ids=["preset", "skip-floor", "skip-below", "skip-below-head"],
)
def test_a_few_steps_lower_both_losses(clic_file: Path, changes: dict) -> None:
    g = fitted(clic_file, **changes).train()
    showers, conditions = batches(clic_file, 48)[0]
    rng = torch.Generator().manual_seed(4)
    noise, draws = g.sample_noise(48, rng), g.sample_draws(48, rng)
    optimizer = torch.optim.Adam(g.parameters(), lr=3e-3)
    with torch.no_grad():
        before = g(noise, conditions, showers, draws)
    for _ in range(40):
        loss = g(g.sample_noise(48, rng), conditions, showers, g.sample_draws(48, rng))
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    with torch.no_grad():
        after = g(noise, conditions, showers, draws)
    # The shape loss starts near its floor (the spread of x_1 - x_0 given x_t, most of the
    # cells being empty), so it moves less; a broken gradient leaves either where it was.
    assert after[0] < 0.85 * before[0] and after[1] < 0.98 * before[1], (before, after)


def test_eval_mode_generates_with_the_ema_weights(clic_file: Path) -> None:
    g = fitted(clic_file, ema_decay=0.5)
    conditions = drawn_conditions(g, 2)
    noise = g.sample_noise(2, torch.Generator().manual_seed(0))
    g.update_ema()  # the first update copies the weights
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(1.5)
    g.eval()
    with torch.no_grad():
        ema = g(noise, conditions)
        g.update_ema()  # halfway to the trained weights
        halfway = g(noise, conditions)
        frozen = g.frozen()  # what the compiled backends run: the EMA in the networks
        torch.testing.assert_close(frozen(noise, conditions), halfway, rtol=1e-6, atol=0)
        g.ema_updates.zero_()  # no EMA yet: the trained weights
        trained = g(noise, conditions)
    assert not torch.equal(ema, halfway) and not torch.equal(halfway, trained)
    assert all(p.requires_grad for p in g.parameters())  # the EMA is buffers, not parameters


def test_saved_and_loaded_model_gives_identical_showers(clic_file: Path, tmp_path: Path) -> None:
    bundle = build_model("flow-match", TINY, seed=2)
    g = bundle.generator
    assert isinstance(g, FlowMatchGenerator)
    g.fit_preprocessing(batches(clic_file), Distributed())
    g.update_ema()
    save_model(tmp_path, bundle, Identity(), g.config.resolved_geometry)
    loaded = load_checkpoint(tmp_path).bundle.generator.eval()
    g.eval()
    conditions = drawn_conditions(g, 4)
    with torch.no_grad():
        a = g(g.sample_noise(4, torch.Generator().manual_seed(9)), conditions)
        b = loaded(loaded.sample_noise(4, torch.Generator().manual_seed(9)), conditions)
    assert torch.equal(a, b) and a.sum() > 0
