"""Running a study: worker processes asking the storage for trials until the study has its
count, with progress, and the clean-up when interrupted.

With one worker the trials run in this process (the trainer's progress bar under the study's);
with several, each worker is a process of its own (spawned: no state shared but the storage)
with an equal share of the cores for torch, and this process follows the storage and prints a
line per finished trial. More machines join a study by running the same command with
`--resume` on a storage they share.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from caloforge.errors import CaloforgeError
from caloforge.tune.space import SearchSpace
from caloforge.tune.study import (
    StorageSpec,
    StudySpec,
    counted_trials,
    finished_trials,
    give_back,
    is_surplus,
    make_sampler,
    optuna_module,
    progress_line,
    recover_interrupted,
)
from caloforge.tune.trial import TrialSettings, TrialStoppedError, run_trial

_POLL_S = 2.0


@dataclass(frozen=True)
class WorkerJob:
    """What a worker needs (plain values: it is sent to spawned processes)."""

    spec: StudySpec
    storage: StorageSpec
    study_name: str
    n_trials: int
    space: SearchSpace
    settings: TrialSettings


def load(job: WorkerJob) -> tuple[Any, Any]:
    """The study and its storage backend, opened in this process."""
    optuna = optuna_module()
    backend = job.storage.open()
    study = optuna.load_study(
        study_name=job.study_name, storage=backend, sampler=make_sampler(job.spec)
    )
    return study, backend


def run_worker(job: WorkerJob, on_trial: Callable[[Any], None] | None = None) -> int:
    """Ask for trials and run them until the study counts `n_trials`; returns how many this
    worker ran. A trial pruned by its physics check ends PRUNED, one whose recipe or run
    fails ends FAIL with the message (the study goes on); an interrupt gives the running
    trial back (its values queued to run again) and is raised on."""
    optuna = optuna_module()
    states = optuna.trial.TrialState
    study, backend = load(job)
    host, pid = socket.gethostname(), os.getpid()

    def finished_checks() -> list[list[tuple[int, float]]]:
        done = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
        return [[(int(s), float(v)) for s, v in t.user_attrs.get("checks", [])] for t in done]

    ran = 0
    while len(counted_trials(study)) < job.n_trials:
        trial = study.ask()
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        if is_surplus(study, trial.number, job.n_trials):
            give_back(study, backend, trial.number, "surplus", {})
            break
        try:
            values = run_trial(trial, job.space, job.settings, finished_checks)
        except TrialStoppedError as exc:
            trial.set_user_attr("pruned", exc.reason)
            study.tell(trial, state=states.PRUNED)
        except CaloforgeError as exc:
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=states.FAIL)
        except KeyboardInterrupt:
            give_back(study, backend, trial.number, "interrupted", dict(trial.params))
            raise
        except BaseException as exc:  # a bug: recorded, then raised with its traceback
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=states.FAIL)
            raise
        else:
            study.tell(trial, values)
        ran += 1
        if on_trial is not None:
            on_trial(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
    return ran


def _worker_process(job: WorkerJob, threads: int, owner: int) -> None:
    """A spawned worker: ends with its parent `owner` (also one that died while this process
    was still starting), SIGTERM handled as Ctrl-C (the running trial is given back), torch
    on its share of the cores."""
    from caloforge._processes import die_with_parent

    die_with_parent(owner)

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    import torch

    torch.set_num_threads(threads)
    try:
        run_worker(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except CaloforgeError as exc:
        print(f"caloforge tune (worker {os.getpid()}): error: {exc}", file=sys.stderr)
        sys.exit(2)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_workers(job: WorkerJob, workers: int, *, progress: bool = True) -> None:
    """Run the study with `workers` processes (1: in this process) until it counts
    `job.n_trials` trials; progress as a bar of trials and a line per finished trial."""
    study, backend = load(job)
    recovered = recover_interrupted(study, backend)
    if recovered and progress:
        print(
            "caloforge tune: trial(s) "
            + ", ".join(map(str, recovered))
            + " were interrupted by a kill; their values run again",
            file=sys.stderr,
        )
    bar = _bar(job, len(finished_trials(study)), progress)
    objectives = job.spec.objectives
    try:
        if workers == 1:

            def on_trial(trial: Any) -> None:
                if bar is not None:
                    bar.update(1)
                    bar.write(progress_line(trial, objectives))

            run_worker(job, on_trial)
            return
        _run_processes(job, workers, study, backend, bar)
    finally:
        if bar is not None:
            bar.close()


def _bar(job: WorkerJob, done: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=job.n_trials,
        initial=min(done, job.n_trials),
        unit="trial",
        desc=f"tune {job.spec.base['model']['family']}",
        position=0,
        dynamic_ncols=True,
    )


def _run_processes(job: WorkerJob, workers: int, study: Any, backend: Any, bar: Any) -> None:
    context = multiprocessing.get_context("spawn")
    threads = max(1, _cores() // workers)
    processes = [
        context.Process(
            target=_worker_process, args=(job, threads, os.getpid()), name=f"tune-worker-{i}"
        )
        for i in range(workers)
    ]
    seen = {t.number for t in finished_trials(study)}
    try:
        for p in processes:
            p.start()
        while True:
            alive = any(p.is_alive() for p in processes)
            for trial in finished_trials(study):
                if trial.number not in seen:
                    seen.add(trial.number)
                    if bar is not None:
                        bar.update(1)
                        bar.write(progress_line(trial, job.spec.objectives))
            if not alive:
                break
            time.sleep(_POLL_S)
    except BaseException:
        for p in processes:
            if p.is_alive():
                p.terminate()  # SIGTERM: each gives its running trial back
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        recover_interrupted(study, backend)  # those that had no time to
        raise
    failed = [(p.name, p.exitcode) for p in processes if p.exitcode not in (0, None)]
    if failed:
        raise CaloforgeError(
            "worker process(es) ended with an error: "
            + ", ".join(f"{name} (exit code {code})" for name, code in failed)
            + "; their messages are above. The study keeps its finished trials: fix the "
            "problem and continue it with --resume"
        )
