"""Training-dynamics plot (BN-VAE Fig. 3) of finished or running runs.

    python -m bnvae_jax.dynamics --workdir=runs/vae --workdir=runs/bn_vae \
        --output=dynamics.png

One panel per ``--workdir``: MI, the KL of the ELBO and KL(q(z)||p(z)) at every
validation, read from the run's ``metrics.jsonl`` (a run without an MI, such as
vMF: the KL only).
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from bnvae_jax import cli
from bnvae_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", None, "Run directory (repeat for more panels).")
flags.DEFINE_multi_string("title", None, "Panel titles (default: the run names).")
flags.DEFINE_string("output", "dynamics.png", "PNG file to write.")
flags.DEFINE_enum("split", "valid", ["valid", "test"], "Which logged split.")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    titles = FLAGS.title or [pathlib.Path(w).name for w in FLAGS.workdir]
    cli.setup_logging()
    with cli.user_errors():
        if len(titles) != len(FLAGS.workdir):
            raise UserError("give one --title per --workdir (or none)")
        for workdir in FLAGS.workdir:
            cli.check_dir(workdir, "--workdir", write=False)
        cli.check_output_file(FLAGS.output, "--output")
        from bnvae_jax.analysis import curves, plots  # after the usage checks

        runs = [
            (title, curves.read_curves(workdir, FLAGS.split))
            for title, workdir in zip(titles, FLAGS.workdir, strict=True)
        ]
    print(plots.dynamics_figure(runs, FLAGS.output))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
