"""Evaluates a trained model: ``python -m bnvae_jax.evaluate --workdir=RUN``.

RUN is a run's workdir (its best checkpoint), a copy of one, or a folder
written by ``python -m bnvae_jax.export``. Computes, with the library code the
train loop uses, IW-NLL, ELBO, KL, PPL, MI and AU on the validation and test
splits (read from the files the run's config names), plus reconstructions and
prior samples; writes ``RUN/evaluation.json`` and ``RUN/samples/``.

BN heads are evaluated with their running statistics, as the paper's code does
(PyTorch eval mode). When those lag behind the encoder (a best checkpoint from
the first epoch of a short run), a warning says so; ``--precise_bn`` replaces
them by the population statistics of the training sentences first.
"""

from __future__ import annotations

import pathlib
import tempfile

import ml_collections
from absl import app, flags

from bnvae_jax import cli, fileio
from bnvae_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "workdir", None, "Run directory written by bnvae_jax.main, or an exported model."
)
flags.DEFINE_integer("iw_samples", None, "Importance samples (default: the run's).")
flags.DEFINE_integer("iw_max_sentences", None, "IW-NLL on the first N sentences.")
flags.DEFINE_string(
    "iw_splits", None, "Comma-separated splits given IW-NLL (default: the run's)."
)
flags.DEFINE_bool(
    "precise_bn",
    False,
    "Recompute the BN head's running statistics from the training sentences first.",
)
flags.DEFINE_string("output", "evaluation.json", "File name written in the workdir.")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    cli.setup_logging()
    with cli.user_errors():
        cli.check_dir(workdir, "--workdir", write=False)
        cli.check_dir(workdir, "--workdir")  # evaluation.json is written there
        cli.log_to_file(workdir)
        import jax

        import bnvae_jax
        from bnvae_jax import config as config_lib
        from bnvae_jax.data import datasets
        from bnvae_jax.tasks import text_vae
        from bnvae_jax.training import loop

        model = bnvae_jax.load(workdir)
        if not isinstance(model, bnvae_jax.TextModel):
            raise UserError(f"{workdir}: evaluate reads text-VAE runs only")
        config = ml_collections.ConfigDict(model.config.to_dict())
        cli.enable_compilation_cache(config)
        for key in ("iw_samples", "iw_max_sentences", "iw_splits"):
            if getattr(FLAGS, key) is not None:
                config.eval[key] = getattr(FLAGS, key)
        run = config_lib.resolve(config, len(model.vocab))
        # A generated corpus is made again outside an exported folder.
        exported = (workdir / bnvae_jax.api.MANIFEST).is_file()
        with tempfile.TemporaryDirectory() as scratch:
            data = datasets.load_datasets(
                run.data, scratch if exported else str(workdir), vocab=model.vocab
            )
        if FLAGS.precise_bn:
            sentences = [" ".join(model.vocab.decode(row)) for row in data.train]
            model = model.recompute_bn(sentences)
        par = loop.setup_devices(run, config)
        variables, samples = par.replicate(model.variables), workdir / "samples"
        results = text_vae.evaluate_model(
            model.module, variables, data, run, par, samples_dir=samples
        )
        results.update(
            method=run.method_name,
            step=model.info["step"],
            precise_bn=FLAGS.precise_bn,
            num_devices=jax.device_count(),
        )
    fileio.write_json_atomic(workdir / FLAGS.output, results)
    print(f"{workdir / FLAGS.output}\n{cli.format_table(results)}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
