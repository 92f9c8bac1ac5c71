"""Sweeps: a grid of config overrides × seeds, one workdir and one process per run.

The command; its code lives in ``bnvae_jax.tools.sweep``.
"""

import sys

from bnvae_jax.tools.sweep import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
