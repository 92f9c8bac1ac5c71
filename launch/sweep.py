"""Runs a grid of config overrides × seeds; see launch/README.md.

    python launch/sweep.py --config=configs/ptb.py \
      --grid=launch/grids/ptb_table1.py --out=runs/ptb_sweep --seeds=2 \
      --config.data.train_file=ptb.train.txt ...

The logic lives in ``bnvae_jax.sweep`` (importable and tested).
"""

import sys

from bnvae_jax.tools import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(sys.argv[1:]))
