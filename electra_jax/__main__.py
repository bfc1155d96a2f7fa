import sys

from electra_jax.cli import main

sys.exit(main())
