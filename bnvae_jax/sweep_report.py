"""The paper's tables from sweep directories: ``python launch/report.py SWEEP...``.

The command; its code lives in ``bnvae_jax.tools.sweep_report``.
"""

import sys

from bnvae_jax.tools.sweep_report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
