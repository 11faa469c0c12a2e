"""What a study leaves: one self-contained HTML page (every figure inline as PNG, no outside
link but the optional per-trial validation reports beside it), `trials.json`, and the chosen
configuration as a preset YAML that `caloforge train --config` reads.

The page shows the Pareto front (fidelity against cost), the chosen configuration, each
trial's values, metrics, physics checks and figure, the importance of each parameter
(Optuna's fANOVA) and each parameter against the fidelity.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloforge import __version__
from caloforge._files import atomic_output
from caloforge.tune.objectives import objective_label
from caloforge.tune.space import SearchSpace, with_values
from caloforge.tune.study import StudySpec, front, optuna_module, trial_values

PAGE = "report.html"
PRESET = "chosen.yaml"
SUMMARY = "trials.json"
# The validation plots shown for the chosen trial, when its report was made.
CHOSEN_PLOTS = ("response_vs_energy", "shower_shapes", "radial_profile", "hits_and_energy")


@dataclass(frozen=True)
class TrialRow:
    """One trial as the page shows it."""

    number: int
    state: str
    values: dict[str, Any]  # as shown
    raw_values: dict[str, Any]  # the recipe's values
    objectives: list[tuple[str, str]]  # (label, formatted value)
    objective_values: list[float]
    headline: list[dict[str, Any]]
    steps: int | None
    minutes: float | None
    showers_per_s: float | None
    gflop_per_shower: float | None
    note: str
    pareto: bool
    chosen: bool
    figure: str  # base64 PNG ("" when nothing to draw)
    report: str | None  # relative link to the trial's validation report


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    png: str  # base64


@dataclass(frozen=True)
class Page:
    title: str
    spec: StudySpec
    storage: str
    counts: dict[str, int]
    objectives: list[str]
    chosen: TrialRow | None
    preset_text: str
    figures: list[Figure]
    importances: list[tuple[str, list[float]]]
    importance_reason: str
    trials: list[TrialRow]
    chosen_plots: list[Figure] = field(default_factory=list)
    created: str = ""
    version: str = __version__


def _png(figure: Any) -> str:
    """A matplotlib figure as base64 PNG, for an inline image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, columns, squeeze=False)[0]
    return fig, axes


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def front_figure(done: Sequence[Any], optimal: Sequence[Any], chosen: Any, spec: StudySpec) -> str:
    """Fidelity against cost (Pareto front joined), or fidelity by trial for one objective."""
    fig, (ax,) = _figure(6.4, 4.2)
    numbers = {t.number for t in optimal}
    if len(spec.objectives) == 1:
        x = [t.number for t in done]
        y = [t.values[0] for t in done]
        ax.plot(x, y, "o", color="0.5", label="completed trials")
        ax.plot(x, np.minimum.accumulate(y) if y else [], "-", color="C0", label="best so far")
        ax.set_xlabel("trial")
    else:
        for t in done:
            ax.plot(t.values[1], t.values[0], "o", color="C0" if t.number in numbers else "0.6")
            ax.annotate(
                str(t.number),
                (t.values[1], t.values[0]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        line = sorted(optimal, key=lambda t: t.values[1])
        ax.plot(
            [t.values[1] for t in line],
            [t.values[0] for t in line],
            "-",
            color="C0",
            label="Pareto front",
        )
        ax.set_xlabel(objective_label(spec.objectives[1]))
    if chosen is not None:
        xy = (
            (chosen.number, chosen.values[0])
            if len(spec.objectives) == 1
            else (chosen.values[1], chosen.values[0])
        )
        ax.plot(*xy, "*", color="C3", markersize=16, label=f"chosen: trial {chosen.number}")
    ax.set_ylabel(objective_label("fidelity") + ", lower is better")
    if any(t.values[0] > 0 for t in done):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _png(fig)


def parameter_figure(done: Sequence[Any], space: SearchSpace) -> str:
    """Each parameter's value against the fidelity of the completed trials."""
    params = space.parameters
    if not done or not params:
        return ""
    fig, axes = _figure(min(3.2 * len(params), 16), 3.0, len(params))
    values = [trial_values(t, params) for t in done]
    for ax, p in zip(axes, params, strict=True):
        xs = [v.get(p.path) for v in values]
        labels = [_fmt(x) for x in xs]
        if p.kind == "choice":
            order = [_fmt(c) for c in p.choices]
            ax.plot(
                [order.index(s) if s in order else -1 for s in labels],
                [t.values[0] for t in done],
                "o",
            )
            ax.set_xticks(range(len(order)), order, rotation=30, fontsize=7)
        else:
            ax.plot(xs, [t.values[0] for t in done], "o")
            if p.log:
                ax.set_xscale("log")
        ax.set_xlabel(p.path, fontsize=8)
        ax.set_yscale("log" if all(t.values[0] > 0 for t in done) else "linear")
    axes[0].set_ylabel("fidelity")
    return _png(fig)


def trial_figure(trial: Any, others: Sequence[Any]) -> str:
    """The trial's physics checks among the others', and its headline rows over tolerance."""
    checks = trial.user_attrs.get("checks") or []
    parts = trial.user_attrs.get("fidelity_parts") or {}
    if not checks and not parts:
        return ""
    fig, (left, right) = _figure(7.2, 2.6, 2)
    for other in others:
        theirs = other.user_attrs.get("checks") or []
        if theirs and other.number != trial.number:
            left.plot(*zip(*theirs, strict=True), "-", color="0.8", linewidth=0.8)
    if checks:
        left.plot(*zip(*checks, strict=True), "o-", color="C0", label=f"trial {trial.number}")
        left.legend(fontsize=7)
    left.set_xlabel("step")
    left.set_ylabel("physics-check score")
    if parts:
        keys = list(parts)
        right.barh(range(len(keys)), [parts[k] for k in keys], color="C1")
        right.axvline(1.0, color="k", linewidth=0.8)
        right.set_yticks(range(len(keys)), keys, fontsize=7)
        right.set_xlabel("value / tolerance (1: at tolerance)")
    else:
        right.set_axis_off()
    return _png(fig)


def importances(study: Any, spec: StudySpec) -> tuple[list[tuple[str, list[float]]], str, str]:
    """(parameter, importance per objective) sorted by the fidelity's, a bar figure, and
    the reason when they cannot be computed (fewer than two completed trials, ...)."""
    optuna = optuna_module()
    table: dict[str, list[float]] = {}
    try:
        for i, _ in enumerate(spec.objectives):
            found = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t, i=i: t.values[i],
            )
            for name, value in found.items():
                table.setdefault(name, [math.nan] * len(spec.objectives))[i] = float(value)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return [], "", f"not computed: {exc}"
    rows = sorted(table.items(), key=lambda kv: -kv[1][0])
    if not rows:
        return [], "", "not computed: no parameter varied among the completed trials"
    fig, (ax,) = _figure(6.4, 0.5 + 0.35 * len(rows))
    height = 0.8 / len(spec.objectives)
    for i, name in enumerate(spec.objectives):
        ax.barh(
            [j + i * height for j in range(len(rows))],
            [r[1][i] for r in rows],
            height,
            label=objective_label(name),
        )
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA, sums to 1 per objective)")
    ax.legend(fontsize=7)
    return rows, _png(fig), ""


def trial_rows(
    study: Any, spec: StudySpec, space: SearchSpace, chosen: Any, out: Path
) -> tuple[list[TrialRow], list[Any], list[Any]]:
    """Every counted trial as a row; the completed ones; the Pareto front."""
    from caloforge.tune.study import completed, counted_trials

    optuna = optuna_module()
    done = completed(study)
    optimal = front(done, spec.directions)
    front_numbers = {t.number for t in optimal}
    everyone = [t for t in counted_trials(study)]
    rows = []
    for t in everyone:
        objectives, objective_values = [], []
        if t.state == optuna.trial.TrialState.COMPLETE and t.values:
            objective_values = [float(v) for v in t.values]
            objectives = [
                (objective_label(n), _fmt(v))
                for n, v in zip(spec.objectives, t.values, strict=True)
            ]
        attrs = t.user_attrs
        seconds = attrs.get("train_seconds")
        report = out / "trials" / f"{t.number:04d}" / "validation" / "index.html"
        values = trial_values(t, space.parameters)
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                values={k: _fmt(v) for k, v in values.items()},
                raw_values=values,
                objectives=objectives,
                objective_values=objective_values,
                headline=list(attrs.get("headline") or []),
                steps=attrs.get("steps"),
                minutes=None if seconds is None else seconds / 60.0,
                showers_per_s=attrs.get("showers_per_s"),
                gflop_per_shower=attrs.get("gflop_per_shower"),
                note=str(attrs.get("pruned") or attrs.get("error") or ""),
                pareto=t.number in front_numbers,
                chosen=chosen is not None and t.number == chosen.number,
                figure=trial_figure(t, everyone),
                report=str(report.relative_to(out)) if report.is_file() else None,
            )
        )
    return rows, done, optimal


def preset_text(spec: StudySpec, values: Mapping[str, Any], header: str) -> str:
    """The chosen recipe as YAML: the study's base recipe with the trial's values (the budget
    that `tune` set for the trials is left out: it is not part of the recipe)."""
    import yaml

    raw = with_values(spec.base, values)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)


def write_preset(path: Path, text: str) -> Path:
    with atomic_output(path) as partial:
        partial.write_text(text)
    return path


def render(page: Page) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("caloforge.tune", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = _fmt
    return env.get_template("tune.html.j2").render(page=page)


def write_page(path: Path, page: Page) -> Path:
    with atomic_output(path) as partial:
        partial.write_text(render(page))
    return path


def chosen_plots(out: Path, number: int) -> list[Figure]:
    """The chosen trial's validation plots (its report's PNGs), inline."""
    folder = out / "trials" / f"{number:04d}" / "validation" / "plots"
    found = []
    for name in CHOSEN_PLOTS:
        png = folder / f"{name}.png"
        if png.is_file():
            found.append(
                Figure(name.replace("_", " "), "", base64.b64encode(png.read_bytes()).decode())
            )
    return found


def summary_json(page: Page) -> str:
    """trials.json: the study's definition, the chosen trial and every trial's numbers."""
    doc = {
        "study": page.spec.to_dict(),
        "objectives": page.objectives,
        "counts": page.counts,
        "chosen": None if page.chosen is None else page.chosen.number,
        "trials": [
            {
                "number": r.number,
                "state": r.state,
                "values": r.raw_values,
                "objectives": dict(zip(page.spec.objectives, r.objective_values, strict=False)),
                "steps": r.steps,
                "minutes": r.minutes,
                "showers_per_s": r.showers_per_s,
                "gflop_per_shower": r.gflop_per_shower,
                "pareto": r.pareto,
                "note": r.note,
                "headline": r.headline,
            }
            for r in page.trials
        ],
        "created": page.created,
        "version": page.version,
    }
    return json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
