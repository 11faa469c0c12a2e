"""Physics validation: two shower sets in, features, metrics, plots and a report out.

    from caloforge.validation import ValidationConfig, validate
    result = validate("reference.h5", "generated.h5", "report", ValidationConfig(subsample=500))
    print(result.summary())

`validate` opens the sets, runs `compare` and writes the report folder (`write_report`);
`compare` alone works on open `ShowerSource`s and returns a `ValidationResult`. The modules,
by role: `config` (the settings), `sources` (opening the sets, the feature workers),
`features`, `metrics`, `classifier`, `verdicts` (bins and verdicts), `results` (the typed
results), `comparison` (`compare`), `plots`, `report` (the report folder and its page).

The names below are imported on first use, so that `import caloforge.validation` (the command
line's parser reads `config`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caloforge.validation.comparison import compare
    from caloforge.validation.config import Tolerances, ValidationConfig, load_config
    from caloforge.validation.report import validate, write_report
    from caloforge.validation.results import (
        CellLevel,
        FeatureComparison,
        Headline,
        ResponseBin,
        SetInfo,
        ValidationResult,
        VectorMetrics,
        Verdict,
    )

_WHERE = {
    "compare": "comparison",
    "Tolerances": "config",
    "ValidationConfig": "config",
    "load_config": "config",
    "validate": "report",
    "write_report": "report",
    "CellLevel": "results",
    "FeatureComparison": "results",
    "Headline": "results",
    "ResponseBin": "results",
    "SetInfo": "results",
    "ValidationResult": "results",
    "Verdict": "results",
    "VectorMetrics": "results",
}

__all__ = [
    "CellLevel",
    "FeatureComparison",
    "Headline",
    "ResponseBin",
    "SetInfo",
    "Tolerances",
    "ValidationConfig",
    "ValidationResult",
    "VectorMetrics",
    "Verdict",
    "compare",
    "load_config",
    "validate",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'caloforge.validation' has no attribute '{name}'")
    module = importlib.import_module(f"caloforge.validation.{_WHERE[name]}")
    return getattr(module, name)
