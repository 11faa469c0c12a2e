"""caloforge: fast calorimeter shower simulation with deep generative models.

Read Geant4 shower files (or simulate showers with the embedded parametrized simulator),
train the seed studies' GANs, generate showers fast, and validate them against Monte Carlo.
Importing the package is cheap: heavy modules (torch, matplotlib) load only when used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
