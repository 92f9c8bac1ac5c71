"""Learning-curve figure of runs: validation −ELBO and KL per epoch.

    python launch/curves.py --run=VAE=runs/ptb_full/vae \
      --run=BN-VAE=runs/ptb_full/bn_vae --output=curves.png

Each ``--run`` is ``LABEL=WORKDIR`` (split at the last "=", so a label may
hold one, as in "BN-VAE (γ=0.6)"); the runs may still be training.
"""

from __future__ import annotations

import argparse
import sys

from bnvae_jax.analysis import curves
from bnvae_jax.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--split", default="valid")
    args = parser.parse_args(argv)
    runs = []
    try:
        for spec in args.run:
            label, sep, workdir = spec.rpartition("=")
            if not sep or not label or not workdir:
                raise UserError(f"--run={spec}: expected LABEL=WORKDIR")
            runs.append((label, curves.read_curves(workdir, args.split)))
        path = curves.curves_figure(runs, args.output)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, c in runs:
        print(
            f"{label}: {c.epoch.size} epochs, last -ELBO {c.elbo_nll[-1]:.2f}, "
            f"KL {c.kl[-1]:.2f}, best -ELBO {c.elbo_nll.min():.2f}"
        )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
