"""Exports a trained model: ``python -m bnvae_jax.export --workdir=RUN --output=DIR``.

Writes a self-contained folder (config, vocabulary, parameters with BN
statistics, a model card and checksums; format in ``bnvae_jax.api``) that
``bnvae_jax.load(DIR)`` and ``python -m bnvae_jax.evaluate --workdir=DIR`` read
without the training workdir.
"""

from __future__ import annotations

from absl import app, flags

from bnvae_jax import cli
from bnvae_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by bnvae_jax.main.")
flags.DEFINE_string("output", None, "Folder to write (must not exist or be empty).")
flags.DEFINE_string(
    "checkpoint", "best", "'best', 'latest' or a training step the run keeps."
)
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    del argv
    cli.setup_logging()
    checkpoint = FLAGS.checkpoint
    checkpoint = int(checkpoint) if checkpoint.isdigit() else checkpoint
    with cli.user_errors():
        import bnvae_jax

        try:
            model = bnvae_jax.load(FLAGS.workdir, checkpoint=checkpoint)
            out = model.save(FLAGS.output)
        except (FileExistsError, ValueError) as e:
            raise UserError(str(e)) from None
    print(f"exported {model.info['method']} (step {model.info['step']}) to {out}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
