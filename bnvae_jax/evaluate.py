"""Evaluates a trained run: ``python -m bnvae_jax.evaluate --workdir=RUN``.

Restores the best checkpoint of RUN and computes, with the same library code the
train loop uses, IW-NLL, ELBO, KL, PPL, MI and AU on the validation and test
splits, plus reconstructions and prior samples; writes ``RUN/evaluation.json``.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
from absl import app, flags

from bnvae_jax import cli, fileio
from bnvae_jax.errors import WorkdirError
from bnvae_jax.tasks import text_vae as train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by bnvae_jax.main.")
flags.DEFINE_integer("iw_samples", None, "Importance samples (default: the run's).")
flags.DEFINE_integer("iw_max_sentences", None, "IW-NLL on the first N sentences.")
flags.DEFINE_string(
    "iw_splits", None, "Comma-separated splits given IW-NLL (default: the run's)."
)
flags.DEFINE_string("output", "evaluation.json", "File name written in the workdir.")
flags.mark_flag_as_required("workdir")


def load_run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    path = workdir / "config.json"
    if not path.is_file():
        raise WorkdirError(f"{workdir} holds no run (no config.json)")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise WorkdirError(f"{path} cannot be read: {e}") from None


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    cli.setup_logging()
    with cli.user_errors():
        cli.check_dir(workdir, "--workdir", write=False)
        cli.check_dir(workdir, "--workdir")  # evaluation.json is written there
        cli.log_to_file(workdir)
        config = load_run_config(workdir)
        cli.enable_compilation_cache(config)
        if FLAGS.iw_samples is not None:
            config.eval.iw_samples = FLAGS.iw_samples
        if FLAGS.iw_max_sentences is not None:
            config.eval.iw_max_sentences = FLAGS.iw_max_sentences
        if FLAGS.iw_splits is not None:
            config.eval.iw_splits = FLAGS.iw_splits
        trainer, state = train.setup(config, str(workdir), write=False)
        state, loop = train.restore_or_start(trainer, state)
        if loop.best_epoch < 0:
            raise WorkdirError(f"{workdir} has no validated checkpoint yet")
        results = train.final_results(trainer, state, loop)
    fileio.write_json_atomic(workdir / FLAGS.output, results)
    print(f"{workdir / FLAGS.output}\n{cli.format_table(results)}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
