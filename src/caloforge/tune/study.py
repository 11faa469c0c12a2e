"""The study: its storage, its definition (checked on resume), the held-out showers, the
count of trials, the recovery of trials a kill interrupted, and the choice of a configuration.

A study lives in an Optuna storage: by default `OUT/study.db` (SQLite, for the worker
processes of one machine); `--storage` takes a database URL (`postgresql://...`, a server
many machines reach) or the path of a journal file (`/shared/study.journal`, Optuna's
JournalFileStorage, for machines sharing a disk). What defines the study (the recipe, the
space, the data, the objectives, the budget, the sampler) is stored with it: `--resume`
continues only the same study, and names what differs otherwise.

Trials are counted in the storage, whichever process or machine runs them: a trial that was
finished, pruned or failed counts; one a kill interrupted does not, and is run again with the
same values (its values are queued when the interruption is found: at once for Ctrl-C or
SIGTERM, at the next `--resume` on the same machine after SIGKILL or a power cut).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from caloforge._files import pid_alive
from caloforge._optional import import_optional
from caloforge.errors import CaloforgeError
from caloforge.tune.objectives import directions, objective_names, pareto_front

STUDY_DB = "study.db"
HELDOUT = "heldout.h5"
SPEC_ATTR = "caloforge_study"
# Trial user attributes that take a trial out of the count (run again, or never needed).
NOT_COUNTED = ("interrupted", "surplus")


def optuna_module() -> ModuleType:
    """Optuna, imported on first use, with a message naming the extra when missing."""
    optuna = import_optional(
        "optuna", package="optuna", extra="tune", purpose="caloforge tune (the study's sampler)"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class StudySpec:
    """What defines a study; stored with it and compared on `--resume`."""

    config: str
    base: dict[str, Any]
    space: dict[str, Any]
    data: list[str]
    cost: str
    sampler: str
    population: int
    seed: int
    budget: dict[str, Any]
    fidelity_keys: list[str] | None
    heldout_showers: int | None
    validation: dict[str, Any] | None = None  # the ValidationConfig of every trial

    @property
    def objectives(self) -> list[str]:
        return objective_names(self.cost)

    @property
    def directions(self) -> list[str]:
        return directions(self.cost)

    def to_dict(self) -> dict[str, Any]:
        """As stored (JSON: tuples become lists), so that a stored study compares equal."""
        out: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return out

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """The settings that differ from the stored study's, in words."""
        mine = self.to_dict()
        names = {
            "base": "the recipe (--config and its KEY=VALUE overrides)",
            "space": "the search space (--space)",
            "data": "the data (--data)",
            "cost": "the cost objective (--cost)",
            "sampler": "the sampler (--sampler)",
            "population": "the NSGA-II population (--population)",
            "seed": "the sampler's seed (--seed)",
            "budget": "the budget (--budget-steps, --budget-minutes, --check-every)",
            "fidelity_keys": "the fidelity's metrics (--fidelity)",
            "heldout_showers": "the held-out showers (--heldout)",
            "validation": "the validation settings (--validation)",
        }
        return [words for key, words in names.items() if stored.get(key) != mine[key]]


@dataclass(frozen=True)
class StorageSpec:
    """Where a study is stored: an Optuna database URL, or a journal file's path."""

    url: str | None = None
    journal: str | None = None

    @classmethod
    def parse(cls, text: str | None, out: Path) -> StorageSpec:
        if text is None:
            return cls(url=f"sqlite:///{(out / STUDY_DB).resolve()}")
        if "://" in text:
            return cls(url=text)
        return cls(journal=str(Path(text).resolve()))

    def describe(self) -> str:
        return self.url if self.url is not None else f"journal file {self.journal}"

    def open(self) -> Any:
        optuna = optuna_module()
        if self.journal is not None:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            Path(self.journal).parent.mkdir(parents=True, exist_ok=True)
            try:
                return JournalStorage(JournalFileBackend(self.journal))
            except OSError as exc:
                raise CaloforgeError(f"--storage {self.journal}: cannot open ({exc})") from None
        assert self.url is not None
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite:"):  # workers write at once: wait for the lock
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
        try:
            return optuna.storages.RDBStorage(self.url, **kwargs)
        except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreachable server
            raise CaloforgeError(f"--storage {self.url}: cannot open ({exc})") from None


def make_sampler(spec: StudySpec) -> Any:
    """NSGA-II for two objectives, TPE for one ("auto"), or the one named; its random draws
    seeded per trial (`trial_seed`)."""
    optuna = optuna_module()
    name = spec.sampler
    if name == "auto":
        name = "nsga2" if len(spec.objectives) > 1 else "tpe"

    def sampler(seed: int) -> Any:
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=spec.population, seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    return _per_trial_sampler(optuna)(sampler, spec.seed)


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler's draws for trial `number` of a study seeded `seed`."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


@functools.cache
def _per_trial_sampler(optuna: ModuleType) -> Any:
    """A sampler class that makes its inner sampler afresh for each trial, seeded by the
    study's seed and the trial's number. One sampler seeded once would draw the same values in
    every worker process and machine (each starts its generator from the same seed), and again
    after a `--resume`; trial numbers are unique in the storage, so these draws differ, and
    trial k's are the same in every run of the same study. The samplers keep nothing else
    between trials (NSGA-II reads its generations from the storage)."""
    base = optuna.samplers.BaseSampler

    class PerTrialSeed(base):  # type: ignore[misc, valid-type]
        def __init__(self, make: Callable[[int], Any], seed: int) -> None:
            self._make, self._seed = make, seed
            self._inner = make(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._inner = self._make(trial_seed(self._seed, trial.number))
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, distribution: Any
        ) -> Any:
            return self._inner.sample_independent(study, trial, param_name, distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._inner.reseed_rng()

    return PerTrialSeed


def open_study(spec: StudySpec, storage: StorageSpec, name: str, *, resume: bool, out: Path) -> Any:
    """Create the study, or with `resume` load it and check it is the same study."""
    optuna = optuna_module()
    backend = storage.open()
    names = optuna.get_all_study_names(storage=backend)
    if name in names and not resume:
        raise CaloforgeError(
            f"{out}: already holds study '{name}' ({storage.describe()}); give --resume to "
            "continue it, or choose another --out (or --study-name)"
        )
    if name not in names and resume:
        raise CaloforgeError(
            f"--resume: no study '{name}' in {storage.describe()} to continue; leave out "
            "--resume to start one"
        )
    if name in names:
        study = optuna.load_study(study_name=name, storage=backend, sampler=make_sampler(spec))
        stored = study.user_attrs.get(SPEC_ATTR)
        if not isinstance(stored, dict):
            raise CaloforgeError(f"study '{name}' in {storage.describe()} was not made by tune")
        changed = spec.differences(stored)
        if changed:
            raise CaloforgeError(
                f"--resume: study '{name}' was started with other settings: "
                f"{'; '.join(changed)} differ. Give the study's settings, or start a new "
                "study in another --out"
            )
        return study
    study = optuna.create_study(
        storage=backend,
        study_name=name,
        directions=spec.directions,
        sampler=make_sampler(spec),
    )
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    return study


# --- the held-out showers ---------------------------------------------------------------------
def write_heldout(
    data: Sequence[str],
    target: Path,
    *,
    fractions: Sequence[float],
    split_seed: int,
    max_showers: int | None,
    data_format: str | None,
    min_showers: int = 1,
) -> int:
    """Copy the recipe's test split of the data (showers no trial trains or checks on) into
    `target`, the first `max_showers` of it; returns how many. Kept when it exists. Fewer
    than `min_showers` (validation.min_showers: below it no headline metric is judged, and
    every trial would fail after its training) are refused before any trial."""
    from caloforge.data.canonical import ShowerWriter
    from caloforge.data.dataset import split_indices
    from caloforge.data.io import open_showers

    with contextlib.closing(open_showers(list(data), data_format)) as source:
        index = split_indices(len(source), tuple(fractions), split_seed)["test"]
        if max_showers is not None:
            index = index[:max_showers]
        if len(index) == 0:
            raise CaloforgeError(
                f"the data ({', '.join(data)}, {len(source)} showers) leaves no test showers "
                f"with training.fractions {list(fractions)}; tune judges every trial on them: "
                "give more showers or a larger third fraction"
            )
        if len(index) < min_showers:
            cap = f" (--heldout {max_showers})" if max_showers is not None else ""
            raise CaloforgeError(
                f"the data ({', '.join(data)}, {len(source)} showers) leaves {len(index)} test "
                f"showers{cap} with training.fractions {list(fractions)}; tune judges every "
                f"trial on them, and validation judges no headline metric on fewer than "
                f"{min_showers} (validation.min_showers): give more showers or a larger "
                "third fraction"
            )
        if target.is_file():
            with contextlib.closing(open_showers(target)) as kept:
                if len(kept) == len(index):
                    return len(kept)
            raise CaloforgeError(
                f"{target}: holds {len(kept)} held-out showers, the study needs {len(index)}; "
                "remove it or use another --out"
            )
        producer = f"caloforge tune: held-out test split (split seed {split_seed})"
        with ShowerWriter(target, source.geometry, producer=producer) as writer:
            index = np.sort(index)
            for lo in range(0, len(index), 256):
                writer.write(source.take(index[lo : lo + 256]))
    return len(index)


# --- counting and recovering trials -----------------------------------------------------------
def _counted(trial: Any, optuna: ModuleType) -> bool:
    states = optuna.trial.TrialState
    if trial.state not in (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING):
        return False
    return not any(trial.user_attrs.get(key) for key in NOT_COUNTED)


def counted_trials(study: Any) -> list[Any]:
    """The trials that count towards --trials (running ones included), by number."""
    optuna = optuna_module()
    return [t for t in study.get_trials(deepcopy=False) if _counted(t, optuna)]


def finished_trials(study: Any) -> list[Any]:
    optuna = optuna_module()
    running = optuna.trial.TrialState.RUNNING
    return [t for t in counted_trials(study) if t.state != running]


def is_surplus(study: Any, number: int, n_trials: int) -> bool:
    """Whether trial `number` is beyond the first `n_trials` counted (two workers asked for
    the last one at once): the later one gives way."""
    numbers = sorted(t.number for t in counted_trials(study))
    return number in numbers and numbers.index(number) >= n_trials


def give_back(study: Any, storage: Any, number: int, reason: str, values: dict[str, Any]) -> None:
    """End running trial `number` as not counted (`reason`: "interrupted" or "surplus"),
    and queue its values (when it has them) to run again."""
    optuna = optuna_module()
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    storage.set_trial_user_attr(trial_id, reason, True)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    if values:
        study.enqueue_trial(values, user_attrs={"retry_of": number})


def recover_interrupted(study: Any, storage: Any) -> list[int]:
    """Trials left running by processes of this machine that no longer run (killed): ended
    as interrupted, their values queued again. Returns their numbers."""
    optuna = optuna_module()
    host = socket.gethostname()
    found = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        if pid_alive(pid):
            continue
        give_back(study, storage, t.number, "interrupted", dict(t.params))
        found.append(t.number)
    return found


# --- the choice ---------------------------------------------------------------------------------
def completed(study: Any) -> list[Any]:
    optuna = optuna_module()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [t for t in done if all(math.isfinite(v) for v in t.values)]


def front(trials: Sequence[Any], directions_: Sequence[str]) -> list[Any]:
    """The Pareto-optimal trials (all of them when nothing dominates)."""
    if not trials:
        return []
    return [trials[i] for i in pareto_front([t.values for t in trials], directions_)]


def choose(trials: Sequence[Any], directions_: Sequence[str], rule: str) -> Any | None:
    """The chosen trial among the Pareto front: the best fidelity ("fidelity"), or the point
    nearest the ideal corner once each objective is scaled to [0, 1] over the front
    ("balanced")."""
    optimal = front(trials, directions_)
    if not optimal:
        return None
    if rule == "fidelity" or len(directions_) == 1:
        return min(optimal, key=lambda t: (t.values[0], t.number))
    values = np.array([t.values for t in optimal], dtype=np.float64)
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions_])
    values = values * signs
    low, high = values.min(axis=0), values.max(axis=0)
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    distance = np.sqrt((scaled**2).sum(axis=1))
    return optimal[int(np.argmin(distance))]


def trial_values(trial: Any, space_params: Sequence[Any]) -> dict[str, Any]:
    """The recipe values of a trial (the sampled values, choices mapped back)."""
    stored = trial.user_attrs.get("recipe_values")
    if isinstance(stored, dict):
        return stored
    return {
        p.path: p.value_of(trial.params[p.path]) for p in space_params if p.path in trial.params
    }


def progress_line(trial: Any, objectives: Sequence[str]) -> str:
    """One line on a finished trial for the progress output."""
    state = trial.state.name.lower()
    if trial.values:
        shown = ", ".join(f"{n} {v:.4g}" for n, v in zip(objectives, trial.values, strict=False))
        return f"trial {trial.number}: {shown}"
    reason = trial.user_attrs.get("pruned") or trial.user_attrs.get("error") or ""
    return f"trial {trial.number}: {state}" + (f" ({reason})" if reason else "")


Callback = Callable[[Any], None]
