"""`python -m multiglance ...` (and `torchrun -m multiglance train ...`)."""
import sys

from .cli import main

sys.exit(main())
