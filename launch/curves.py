"""Learning-curve figure of runs: validation −ELBO and KL per epoch.

``python launch/curves.py --run=VAE=runs/ptb/vae --run=BN-VAE=runs/ptb/bn_vae
--output=curves.png``: each ``--run`` is ``LABEL=WORKDIR``, split at the last
"=" (so a label may hold one, as in "BN-VAE (γ=0.6)"); the runs may still be
training.
"""

from absl import app, flags

from bnvae_jax import cli
from bnvae_jax.analysis import curves, plots
from bnvae_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", None, "LABEL=WORKDIR of a run (repeat for more).")
flags.DEFINE_string("output", None, "PNG file to write.")
flags.DEFINE_enum("split", "valid", ["valid", "test"], "Which logged split.")
flags.mark_flags_as_required(["run", "output"])


def main(argv):
    del argv
    runs = []
    with cli.user_errors():
        for spec in FLAGS.run:
            label, _, workdir = spec.rpartition("=")
            if not label or not workdir:
                raise UserError(f"--run={spec}: expected LABEL=WORKDIR")
            runs.append((label, curves.read_curves(workdir, FLAGS.split)))
        path = plots.curves_figure(
            runs, cli.check_output_file(FLAGS.output, "--output")
        )
    for label, c in runs:
        print(
            f"{label}: {c.epoch.size} epochs, last -ELBO {c.elbo_nll[-1]:.2f}, "
            f"KL {c.kl[-1]:.2f}, best -ELBO {c.elbo_nll.min():.2f}"
        )
    print(path)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
