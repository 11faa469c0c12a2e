"""`python -m caloforge` (also what `torchrun -m caloforge` runs)."""

import sys

from caloforge.cli import main

sys.exit(main())
