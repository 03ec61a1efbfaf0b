"""`python -m gridwise_trainer`: what torchrun runs in each elastic worker (same as gridwise-trainer)."""

import sys

from .cli import main

sys.exit(main())
