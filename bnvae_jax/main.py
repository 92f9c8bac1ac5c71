"""Trains and evaluates a text VAE: ``python -m bnvae_jax.main --config=F``.

The console shows a progress bar, one line per epoch, warnings and the results
table; ``--verbosity=0`` adds third-party INFO records (orbax, JAX). Everything
is also appended to ``WORKDIR/log.txt``. ``--print_config`` lists every config
key with its value (after the ``--config.X=...`` overrides) and its meaning, and
exits without training.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from bnvae_jax import cli, fileio
from bnvae_jax import config as config_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", cli.DEFAULT_CONFIG, "Config file; --print_config lists its keys."
)
flags.DEFINE_string(
    "workdir", None, "Run directory (default: runs/<method>); rerun to resume."
)
flags.DEFINE_bool("print_config", False, "Print each key, value and doc; do not train.")


def main(argv):
    del argv
    cli.setup_logging()
    config = FLAGS.config
    if FLAGS.print_config:
        print(cli.format_config(config))
        return
    workdir = FLAGS.workdir or f"runs/{config.method}"
    with cli.user_errors():
        cli.check_dir(workdir, "--workdir")
        # JAX loads only now (--help and usage errors answer at once), and
        # multi-host runs join before anything touches a device.
        from bnvae_jax import parallel

        parallel.initialize_distributed(config_lib.parallel_config(config))
        import jax

        me = jax.process_index()
        cli.log_to_file(workdir, cli.LOG_FILE if me == 0 else f"log.{me}.txt")
        cli.enable_compilation_cache(config)
        logging.getLogger(cli.FILE_ONLY).info("devices: %s", jax.devices())
        # Dialog CVAEs (configs/switchboard.py): another task, the same loop.
        if config.get("task") == "dialog":
            from bnvae_jax.tasks.dialog import train as runner
        else:
            from bnvae_jax.tasks import text_vae as runner
        results = runner.train_and_evaluate(config, workdir)
        if me > 0:
            return
        table = getattr(runner, "format_table", cli.format_table)(results)
        fileio.write_text_atomic(f"{workdir}/results.txt", table + "\n")
    print(f"{config.method} in {workdir}\n{table}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.make_flags_parser())
