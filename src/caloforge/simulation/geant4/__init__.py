"""Geant4 as a simulation engine: `caloforge simulate --engine geant4`.

caloforge compiles a small Geant4 application of its own (app.cc: a layered calorimeter
built from the caloforge geometry, a particle gun, a sensitive detector that sums energy per
cell) on first use and drives it from worker processes. `build` finds Geant4 and compiles;
`engine` runs showers.

The physics list. With Geant4's datasets installed, Geant4's standard electromagnetic
physics (`G4EmStandardPhysics`, option 0) runs by default, or any list `--physics-list`
names (`em-standard-opt1` .. `opt4`, or a reference list such as `FTFP_BERT`). Without data
files (the calzone wheel ships none) the `data-free` list runs: option 0 with every model
that reads data replaced by one that does not:
  - photons: photo-electric effect from the built-in Sandia parametrisation, Klein-Nishina
    Compton scattering, conversion by the relativistic pair model at all energies (option 0
    uses the 5D Bethe-Heitler model below 80 GeV); no Rayleigh scattering;
  - electrons and positrons: Urban multiple scattering below 100 MeV, Wentzel-VI with single
    Coulomb scattering above, Moller-Bhabha ionisation, the relativistic bremsstrahlung model
    at all energies (option 0 uses Seltzer-Berger's tables below 1 GeV), annihilation;
  - recoil ions: multiple scattering and ionisation;
  - no fluorescence, Auger electrons or PIXE, no photo- or electro-nuclear processes (no
    hadronic physics at all), no optical physics.
It is Monte Carlo of electromagnetic showers, not of everything a shower does: the low-energy
bremsstrahlung and conversion models differ from option 0's and the missing nuclear processes
take a fraction of a percent of the energy in a real detector.
"""

from caloforge.simulation.geant4.engine import (
    DATA_FREE,
    PARTICLES,
    Geant4Setup,
    prepare,
    simulate_geant4,
)

__all__ = ["DATA_FREE", "PARTICLES", "Geant4Setup", "prepare", "simulate_geant4"]
