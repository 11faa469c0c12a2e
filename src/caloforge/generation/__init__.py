"""Generation: a checkpoint turned into showers.

    >>> pipeline = ShowerPipeline.from_checkpoint("runs/gan3d", backend="compiled")
    >>> out = pipeline({"energy": np.full(8, 100.0)}, torch.Generator().manual_seed(0))
    >>> generate_to_file("runs/gan3d", "generated.h5", n=10_000, seed=1)

- `pipeline`: `ShowerPipeline`, the one way conditions become showers in GeV;
- `backends`: how the generator runs (eager, compiled, bf16, int8), `BACKENDS`; `auto`:
  which of them `--backend auto` takes here, from the int8 guard's kept verdict
  (`int8_verdict`) and the run's length;
- `run`: `caloforge generate`, conditions in batches streamed to a file (under torchrun too);
- `int8`: the int8 generator and its accuracy guard; `openvino`, `onnx_graph`: the OpenVINO
  runtime and the ONNX tracing it (and `caloforge export`) start from;
- `conditions`: the conditions' checks and their drawing for calibration and timing.
"""

from caloforge.generation.backends import BACKENDS
from caloforge.generation.pipeline import GeneratedShowers, ShowerPipeline, training_ranges
from caloforge.generation.run import OutsideTrainingRangeWarning, generate_to_file

__all__ = [
    "BACKENDS",
    "GeneratedShowers",
    "OutsideTrainingRangeWarning",
    "ShowerPipeline",
    "generate_to_file",
    "training_ranges",
]
