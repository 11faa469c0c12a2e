"""Entry point of one Geant4 worker process: `python -m caloforge.simulation.geant4.worker
READ_FD WRITE_FD`, started by `engine.Geant4Workers` (a process of its own, so that no
user script is imported again in it, as multiprocessing's spawn would)."""

import sys

from caloforge.simulation.geant4.engine import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
