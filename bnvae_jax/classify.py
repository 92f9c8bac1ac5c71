"""Few-label classification on a trained run (paper Table 3).

    python -m bnvae_jax.classify --workdir=RUN --train_file=F --test_file=F

The training and scoring live in ``bnvae_jax.tasks.classify``; every fit runs
on the shared training loop in ``RUN/<output>/labels<N>_seed<S>/``, so a killed
command resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from absl import app, flags

from bnvae_jax import cli, fileio
from bnvae_jax.config import CLF_MODES, CLF_SUBSETS
from bnvae_jax.errors import ConfigError, WorkdirError

if TYPE_CHECKING:
    from bnvae_jax.tasks.classify import TrainedRun

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by bnvae_jax.main.")
flags.DEFINE_string("train_file", None, "LABEL<TAB>TEXT pool the labels come from.")
flags.DEFINE_string("valid_file", "", "LABEL<TAB>TEXT file for model selection.")
flags.DEFINE_string("test_file", None, "LABEL<TAB>TEXT file scored.")
flags.DEFINE_list("labels", ["100", "500", "1000", "2000", "10000"], "Label counts.")
flags.DEFINE_integer("seeds", 10, "Seeds per label count (the reference's first).")
flags.DEFINE_enum("subsets", "balanced", CLF_SUBSETS, "How labelled subsets are drawn.")
flags.DEFINE_enum("mode", "finetune", CLF_MODES, "Encoder fine-tuned or frozen.")
flags.DEFINE_integer("epochs", 100, "Upper bound on classifier epochs.")
flags.DEFINE_float("learning_rate", 1.0, "SGD learning rate.")
flags.DEFINE_string(
    "output",
    "classification",
    "Stem of the files written in RUN; RUN/<stem>/ holds one directory a fit.",
)
flags.mark_flags_as_required(["workdir", "train_file", "test_file"])


def load_run(workdir: str) -> TrainedRun:
    """The best checkpoint of a text-VAE run (``bnvae_jax.load``), as a TrainedRun.

    Raises:
        WorkdirError: not a finished text-VAE run, or a run without a latent.
    """
    from bnvae_jax import api
    from bnvae_jax.tasks.classify import TrainedRun

    model = api.load(workdir)
    if not isinstance(model, api.TextModel):
        raise WorkdirError(f"{workdir}: not a text-VAE run")
    if not model.module.cfg.latent_dim:
        raise WorkdirError(
            f"{workdir}: method {model.run.method_name} has no latent code"
        )
    bucket_width = model.run.data.bucket_width
    return TrainedRun(model.module, model.variables, model.vocab, bucket_width)


def _label_counts(values: Sequence[str]) -> list[int]:
    try:
        counts = [int(v) for v in values]
    except ValueError:
        raise ConfigError(f"--labels takes integers, got {','.join(values)}") from None
    if not counts or min(counts) < 2:
        raise ConfigError("--labels: every count must be at least 2")
    return counts


def main(argv):
    del argv
    files = ("train_file", "valid_file", "test_file")
    cli.setup_logging()
    with cli.user_errors():
        cli.check_dir(FLAGS.workdir, "--workdir", write=False)
        # Writable too: the report is written there.
        workdir = cli.check_dir(FLAGS.workdir, "--workdir")
        for name in [n for n in files if FLAGS[n].value]:
            cli.check_file(FLAGS[name].value, f"--{name}")
        # JAX loads only now: --help and usage errors answer at once.
        from bnvae_jax.tasks.classify import (
            ClassifierConfig,
            FitData,
            format_table,
            read_labelled,
            run_classification,
            seed_list,
        )

        # The flags named as the config's fields.
        fields = ("mode", "subsets", "epochs", "learning_rate")
        cfg = ClassifierConfig(**{name: FLAGS[name].value for name in fields})
        counts, seeds = _label_counts(FLAGS.labels), seed_list(FLAGS.seeds)
        run = load_run(FLAGS.workdir)
        pool, classes = read_labelled(FLAGS.train_file, run.vocab)
        valid, test = (
            read_labelled(path, run.vocab, classes)[0] if path else None
            for path in (FLAGS.valid_file, FLAGS.test_file)
        )
        report = run_classification(
            run,
            FitData(train=pool, valid=valid, test=test),
            num_classes=len(classes),
            label_counts=counts,
            seeds=seeds,
            cfg=cfg,
            fits_dir=workdir / FLAGS.output,
        )
    paths = {name.split("_")[0]: FLAGS[name].value for name in files}
    report.update(classes=list(classes), files=paths)
    table = format_table(workdir.name, report)
    fileio.write_json_atomic(workdir / f"{FLAGS.output}.json", report)
    fileio.write_text_atomic(workdir / f"{FLAGS.output}.md", table + "\n")
    print(f"{workdir / FLAGS.output}.md\n{table}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser(None))
