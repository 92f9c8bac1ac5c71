"""Markdown table of finished runs: ``python -m bnvae_jax.report RUN ...``.

The command; its code lives in ``bnvae_jax.tools.report``.
"""

import sys

from bnvae_jax.tools.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
