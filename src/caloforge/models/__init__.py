"""The seed studies' generative models, one file per family, and the registry that builds them.

    >>> bundle = build_model("gan3d")                  # default config
    >>> bundle = build_model("conv2d-g1", {"noise": "normal"}, seed=1)
    >>> noise = bundle.generator.sample_noise(8, torch.Generator().manual_seed(0))
    >>> showers = bundle.generator(noise, {"energy": torch.full((8,), 100.0)})  # (8, 25, 25, 25)
    >>> heads = bundle.discriminator(showers)          # GanDiscriminatorOutput(logit, energy, ecal)

Families (`MODEL_FAMILIES`): `gan3d` (3DGAN, 25^3), `gan3d-angle` (3DGAN, 51x51x25 with
theta), `conv2d-g1`, `conv2d-g2`, `conv2d-g3` (Conv2D GANs, 25^3), `wgan-lhcb` (WGAN-GP with a
condition regressor, 30x30), `flow-match` (two-stage conditional flow matching, any
geometry). A bundle's `config_dict()` is the `config.json` that rebuilds it:
`build_model(d["family"], d)`.
"""

from caloforge.models import conv2d, flow_match, gan3d, gan3d_angle, wgan_lhcb
from caloforge.models.base import (
    MODEL_FAMILIES,
    GanDiscriminatorOutput,
    ModelBundle,
    ModelConfig,
    ModelConfigError,
    ShowerGenerator,
    build_model,
    init_weights,
    parameter_counts,
    register,
)

__all__ = [
    "MODEL_FAMILIES",
    "GanDiscriminatorOutput",
    "ModelBundle",
    "ModelConfig",
    "ModelConfigError",
    "ShowerGenerator",
    "build_model",
    "conv2d",
    "flow_match",
    "gan3d",
    "gan3d_angle",
    "init_weights",
    "parameter_counts",
    "register",
    "wgan_lhcb",
]
