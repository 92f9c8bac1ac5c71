"""The synthetic lagging study: ``python -m bnvae_jax.lagging --config=F --workdir=D``.

Trains VAE and BN-VAE settings with a scalar latent, snapshots both posterior
means of fixed training sentences and draws BN-VAE Figs. 1-2 (see
``bnvae_jax.tasks.lagging``). Rerun to resume; ``--plot_only`` redraws.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from bnvae_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Study config (configs/lagging.py).")
flags.DEFINE_string("workdir", "runs/lagging", "Study directory; rerun to resume.")
flags.DEFINE_bool("plot_only", False, "Redraw the figures from the saved snapshots.")
flags.mark_flag_as_required("config")


def main(argv):
    del argv
    cli.setup_logging()
    with cli.user_errors():
        cli.check_dir(FLAGS.workdir, "--workdir")
        cli.log_to_file(FLAGS.workdir)
        from bnvae_jax.tasks import lagging  # loads JAX: after the usage checks

        cli.enable_compilation_cache(FLAGS.config)
        summary = lagging.run_study(
            FLAGS.config, FLAGS.workdir, plot_only=FLAGS.plot_only
        )
    print(lagging.format_summary(summary))
    for name in (lagging.FIG1_FILE, lagging.FIG2_FILE, lagging.POINTS_FILE):
        print(f"{FLAGS.workdir}/{name}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser())
