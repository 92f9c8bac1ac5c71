"""Shared command-line plumbing: config flag, friendly errors, the results table."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import pathlib
import re
import sys
from collections.abc import Sequence

from absl import flags

from bnvae_jax import config_lib
from bnvae_jax.errors import ConfigError, UserError

DEFAULT_CONFIG = str(pathlib.Path(__file__).with_name("default_config.py"))
TABLE_KEYS = ("iw_nll", "iw_ppl", "elbo_nll", "rec", "kl", "mi", "au")


def load_config_file(path: str):
    """Imports a config file and returns its ``get_config()``."""
    spec_path = path.split(":", 1)[0]
    if not pathlib.Path(spec_path).is_file():
        raise ConfigError(f"config file not found: {spec_path}")
    spec = importlib.util.spec_from_file_location("_bnvae_config", spec_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _override_keys(argv: Sequence[str], flag: str) -> list[str]:
    pattern = re.compile(rf"^--{flag}\.([A-Za-z0-9_.]+)(=|$)")
    return [m.group(1) for a in argv if (m := pattern.match(a))]


def _config_path(argv: Sequence[str], flag: str) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
        if arg == f"--{flag}" and i + 1 < len(argv):
            return argv[i + 1]
    return DEFAULT_CONFIG


def make_flags_parser(flag: str = "config"):
    """A parser for ``app.run`` that turns every argv mistake into one line."""

    def parse(argv: list[str]):
        try:
            config = load_config_file(_config_path(argv, flag))
            config_lib.check_override_keys(config, _override_keys(argv, flag))
            return flags.FLAGS(argv)
        except (flags.Error, UserError, ValueError, TypeError, KeyError) as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            fail(message)

    return parse


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def user_errors():
    """Shows a ``UserError`` as one line on stderr and exits with status 2."""
    try:
        yield
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        logging.warning("interrupted: the last checkpoint is kept; rerun to resume")
        sys.exit(130)


def format_table(results: dict, splits: Sequence[str] = ("valid", "test")) -> str:
    """A plain-text table of the headline metrics of ``results.json``."""
    keys = [k for k in TABLE_KEYS if any(k in results.get(s, {}) for s in splits)]
    header = ["split"] + keys
    rows = [header]
    for split in splits:
        values = results.get(split)
        if values is None:
            continue
        rows.append(
            [split]
            + [
                f"{values[k]:.3f}"
                if isinstance(values.get(k), float)
                else str(values.get(k, "-"))
                for k in keys
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
