"""Paper-style tables (Table 1/8 and Table 2) of a sweep; see launch/README.md.

    python launch/report.py runs/ptb_sweep [--split=test] [--baseline=vae]

The logic lives in ``bnvae_jax.sweep_report`` (importable and tested).
"""

import sys

from bnvae_jax.tools import sweep_report

if __name__ == "__main__":
    sys.exit(sweep_report.main(sys.argv[1:]))
