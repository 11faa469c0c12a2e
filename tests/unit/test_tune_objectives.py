"""What a study weighs and decides: the fidelity of a validation headline, the Pareto front,
the choice of a trial, and the pruning rule on physics checks."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from caloforge.tune.objectives import fidelity, pareto_front, row_badness
from caloforge.tune.study import choose
from caloforge.tune.trial import Budget, Pruning, prune_reason


def row(key: str, value: float | None, tolerance: float | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value, tolerance=tolerance)


def test_each_row_is_measured_from_ideal_in_units_of_its_tolerance() -> None:
    assert row_badness("classifier_auc_low_level", 0.5, 0.6) == 0.0
    assert row_badness("classifier_auc_low_level", 0.7, 0.6) == pytest.approx(2.0)
    assert row_badness("classifier_auc_high_level", 0.45, 0.6) == 0.0  # below chance: ideal
    assert row_badness("response_deviation", -0.04, 0.02) == pytest.approx(2.0)
    assert row_badness("resolution_deviation", 0.05, 0.10) == pytest.approx(0.5)
    assert row_badness("fpd", 0.01, 0.02) == pytest.approx(0.5)
    assert row_badness("kpd", -1e-4, 1e-3) == 0.0  # an unbiased estimate below zero
    assert row_badness("fpd", None, 0.02) is None
    assert row_badness("fpd", 0.01, None) is None
    assert row_badness("fpd", math.nan, 0.02) is None


def test_fidelity_is_the_mean_of_the_judged_rows() -> None:
    headline = [
        row("classifier_auc_low_level", 0.8, 0.6),  # 3
        row("fpd", None, 0.02),  # not judged
        row("response_deviation", 0.02, 0.02),  # 1
    ]
    score = fidelity(headline)
    assert score.score == pytest.approx(2.0)
    assert set(score.parts) == {"classifier_auc_low_level", "response_deviation"}
    assert fidelity(headline, ["response_deviation"]).score == pytest.approx(1.0)
    assert math.isinf(fidelity([row("fpd", None, 0.02)]).score)


def test_the_pareto_front_keeps_what_nothing_dominates() -> None:
    # fidelity (minimize), showers/s (maximize)
    points = [(1.0, 10.0), (2.0, 50.0), (1.5, 5.0), (3.0, 50.0), (0.5, 1.0)]
    assert pareto_front(points, ["minimize", "maximize"]) == [0, 1, 4]
    # fidelity against FLOPs, both minimized
    assert pareto_front([(1.0, 2.0), (1.0, 1.0), (2.0, 0.5)], ["minimize", "minimize"]) == [1, 2]


def trials(*values: tuple[float, ...]) -> list[SimpleNamespace]:
    return [SimpleNamespace(number=i, values=list(v)) for i, v in enumerate(values)]


def test_the_chosen_trial_is_on_the_front() -> None:
    done = trials((1.0, 0.9), (1.1, 0.1), (3.0, 0.05), (2.0, 0.95))
    directions = ["minimize", "minimize"]
    assert choose(done, directions, "fidelity").number == 0
    # scaled over the front (trials 0-2), trial 1 is nearest the ideal corner
    assert choose(done, directions, "balanced").number == 1
    assert choose(trials((2.0,), (1.0,)), ["minimize"], "balanced").number == 1
    assert choose([], directions, "fidelity") is None


def test_pruning_compares_the_best_check_with_the_finished_trials() -> None:
    finished = [[(10, 0.2), (20, 0.1)], [(10, 0.4), (20, 0.3)], [(10, 0.6), (20, 0.5)]]
    rule = Pruning(percentile=50.0, startup=2, warmup=10)
    assert prune_reason([(10, 0.3)], finished, rule) is None  # better than the median 0.4
    reason = prune_reason([(10, 0.45), (20, 0.5)], finished, rule)
    assert reason is not None and "worse than the 50th percentile 0.3" in reason
    assert prune_reason([(5, 9.0)], finished, rule) is None  # before the warm-up
    assert prune_reason([(10, 9.0)], finished[:1], rule) is None  # too few finished
    assert prune_reason([(10, 9.0)], finished, Pruning(enabled=False)) is None
    assert "score nan" in str(prune_reason([(10, math.nan)], finished, rule))
    # a finished trial's last check at or before the step stands for it
    assert prune_reason([(15, 0.35)], finished, rule) is None
    assert prune_reason([(15, 0.45)], finished, rule) is not None


def test_the_budget_sets_the_recipe_entries_it_owns() -> None:
    assert Budget(steps=200, check_every=40).overrides() == {
        "training.check_every": 40,
        "training.keep_checkpoints": 1,
        "training.max_steps": 200,
        "training.epochs": 1_000_000,
    }
    assert "training.max_steps" not in Budget(minutes=5.0).overrides()


def test_without_optuna_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from caloforge._optional import MissingDependencyError
    from caloforge.tune.study import optuna_module

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'caloforge[tune]'")):
        optuna_module()


def test_storages_are_told_apart_and_a_changed_study_is_named(tmp_path: Path) -> None:
    from caloforge.tune.study import StorageSpec, StudySpec

    assert StorageSpec.parse(None, tmp_path).url == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert StorageSpec.parse("postgresql://host/db", tmp_path).url == "postgresql://host/db"
    journal = StorageSpec.parse(str(tmp_path / "s.journal"), tmp_path)
    assert journal.journal == str(tmp_path / "s.journal") and journal.url is None
    spec = StudySpec(
        config="flow-match",
        base={"model": {"family": "flow-match"}},
        space={"parameters": {"model.shape_steps": {"type": "int", "low": 1, "high": 4}}},
        data=["a.h5"],
        cost="flops",
        sampler="auto",
        population=8,
        seed=0,
        budget={"steps": 10, "minutes": None, "check_every": 2},
        fidelity_keys=None,
        heldout_showers=None,
    )
    assert spec.objectives == ["fidelity", "gflop_per_shower"]
    assert spec.directions == ["minimize", "minimize"]
    assert spec.differences(spec.to_dict()) == []
    stored = {**spec.to_dict(), "cost": "speed", "data": ["b.h5"]}
    assert spec.differences(stored) == ["the data (--data)", "the cost objective (--cost)"]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_workers_sharing_a_study_draw_different_trials_and_each_trial_is_reproducible(
    sampler: str,
) -> None:
    """Each worker process (or machine, or `--resume`) makes its own sampler from the study's
    seed: seeded once, they all drew the same values (a study run by two workers ran every
    trial twice). The draws are seeded per trial number instead."""
    optuna = pytest.importorskip("optuna")
    from caloforge.tune.study import StudySpec, make_sampler

    spec = StudySpec(
        config="flow-match",
        base={},
        space={},
        data=["a.h5"],
        cost="flops",
        sampler=sampler,
        population=8,
        seed=3,
        budget={"steps": 10, "minutes": None, "check_every": 2},
        fidelity_keys=None,
        heldout_showers=None,
    )

    def draws(study: Any) -> dict[str, float]:  # one trial asked by a fresh "worker"
        worker = optuna.load_study(
            study_name=study.study_name, storage=study._storage, sampler=make_sampler(spec)
        )
        trial = worker.ask()
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "width": trial.suggest_int("width", 16, 512),
        }

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = spec.directions if sampler == "nsga2" else ["minimize"]
    study = optuna.create_study(directions=directions, sampler=make_sampler(spec))
    first, second = draws(study), draws(study)
    assert first != second
    again = optuna.create_study(directions=directions, sampler=make_sampler(spec))
    assert draws(again) == first
