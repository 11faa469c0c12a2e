"""Entry point of one Geant4 worker process: `python -m caloforge.simulation.geant4.worker
READ_FD WRITE_FD`, started by `engine.Geant4Workers` (a process of its own, so that no
user script is imported again in it, as multiprocessing's spawn would)."""

import os
import sys

from caloforge.simulation.geant4.engine import serve

if __name__ == "__main__":
    with os.fdopen(int(sys.argv[1]), "rb") as receive, os.fdopen(int(sys.argv[2]), "wb") as send:
        serve(receive, send)
