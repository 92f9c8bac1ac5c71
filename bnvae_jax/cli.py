"""Shared command-line plumbing: config flag, friendly errors, the results table."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import runpy
import sys
from collections.abc import Sequence

import tqdm
from absl import flags

from bnvae_jax import config as config_lib
from bnvae_jax.errors import ConfigError, UserError

DEFAULT_CONFIG = config_lib.__file__  # its get_config() is the default run
TABLE_KEYS = ("iw_nll", "iw_ppl", "elbo_nll", "rec", "kl", "mi", "au")


def load_config_file(path: str):
    """Imports a config file and returns its ``get_config()``."""
    spec_path = path.split(":", 1)[0]
    if not pathlib.Path(spec_path).is_file():
        raise ConfigError(f"config file not found: {spec_path}")
    try:
        module = runpy.run_path(spec_path)
    except SyntaxError as e:
        raise ConfigError(
            f"config file {spec_path} does not parse: {e.msg} (line {e.lineno})"
        ) from None
    except OSError as e:
        raise ConfigError(f"config file {spec_path}: {e.strerror}") from None
    if not callable(module.get("get_config")):
        raise ConfigError(f"config file {spec_path} defines no get_config()")
    return module["get_config"]()


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


def config_docs(task: str = "") -> dict[str, str]:
    """One-line docs of the config keys: the comments of their typed fields."""
    if task != "dialog":
        return config_lib.key_docs(config_lib.RunConfig)
    from bnvae_jax.tasks.dialog import config as dialog_config  # loads JAX

    return config_lib.key_docs(dialog_config.DialogRunConfig)


def format_config(config) -> str:
    """``config`` by section, one line a key: dotted key, value, ``# doc``."""
    docs = config_docs(config.get("task", ""))
    order = {key: i for i, key in enumerate(docs)}
    notes = {key: f"  # {doc}" for key, doc in docs.items() if doc}
    flat = config_lib.flatten(config)
    keys = sorted(flat, key=lambda k: order.get(k, len(order)))
    groups = {}
    for key in keys:
        groups.setdefault(key.rpartition(".")[0], []).append(key)
    width, lines = max(map(len, keys)), []
    for section in sorted(groups, key=lambda s: (s != "", order.get(s, len(order)))):
        if section:
            lines += ["", f"[{section}]{notes.get(section, '')}"]
        for key in groups[section]:
            line = f"{key:<{width}}  {flat[key]!r:<10}{notes.get(key, '')}"
            lines.append(line.rstrip())
    return "\n".join(lines).strip("\n")


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
# Mistakes in argv or the config, each shown as one line.
ARGV_ERRORS = (flags.Error, UserError, ValueError, TypeError, KeyError, AttributeError)


def make_flags_parser(flag: str | None = "config"):
    """A parser for ``app.run`` that turns every argv mistake into one line.

    ``flag``: the config-file flag whose file and override keys are checked
    first (None: the command has none). ``--help`` exits with status 0.
    """

    def parse(argv: list[str]):
        try:
            if flag is not None and not any(arg in HELP_FLAGS for arg in argv[1:]):
                config = load_config_file(_config_path(argv, flag))
                config_lib.check_override_keys(config, _override_keys(argv, flag))
            return flags.FLAGS(argv)
        except SystemExit as e:  # absl's help exits with status 1
            sys.exit(0 if e.code == 1 else e.code)
        except ARGV_ERRORS as e:
            fail(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))

    return parse


def _distributed() -> bool:
    """Whether this process joined a multi-host run (never imports JAX)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _exit(status: int) -> None:
    """Exits; a host of a multi-host run does not wait for the others.

    JAX's shutdown waits for every host, and a host that stopped early would
    wait there while the others wait for it in a collective or a barrier. So
    it leaves at once; the others stop with an error when its heartbeat ends
    (``parallel.heartbeat_timeout_s``).
    """
    if _distributed():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def fail(message: str, status: int = 2) -> None:
    """One ``error:`` line on stderr, then exit with ``status``."""
    print(f"error: {message}", file=sys.stderr)
    _exit(status)


@contextlib.contextmanager
def user_errors():
    """Shows a ``UserError`` as one line on stderr and exits with status 2.

    A host of a multi-host run that fails in any other way logs the traceback
    and leaves at once too (``_exit``).
    """
    try:
        yield
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        logging.warning("interrupted: the last checkpoint is kept; rerun to resume")
        _exit(130)
    except Exception as e:
        if not _distributed():
            raise
        logging.getLogger(FILE_ONLY).exception("this host failed")
        first = (str(e).strip().splitlines() or [""])[0]
        fail(f"this host stopped ({type(e).__name__}: {first}); see the log", 1)


def check_dir(path: str | os.PathLike, what: str, write: bool = True) -> pathlib.Path:
    """``path`` as a directory that can be used (created when ``write``).

    Raises:
      UserError: it is a file, or cannot be created, read or written.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a directory")
    if write:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{what} {path} cannot be created: {e.strerror}") from None
    elif not path.is_dir():
        raise UserError(f"{what} {path} does not exist")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
        need = "read and written" if write else "read"
        raise UserError(f"{what} {path} cannot be {need} (permissions)")
    return path


def check_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a file that can be read; ``UserError`` otherwise."""
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path} cannot be read (permissions)")
    return path


def enable_compilation_cache(config) -> None:
    """Turns on JAX's persistent compilation cache as ``config.compilation_cache`` asks.

    'user' (the default) means ``$XDG_CACHE_HOME/bnvae_jax/xla`` (default
    ``~/.cache``): one cache for every run of this user, so sweep runs, resumed
    runs and evaluations reuse what an earlier run compiled. '' turns it off;
    anything else is the folder.
    """
    import jax

    path = config.get("compilation_cache", "user")
    if path == "user":
        base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        path = os.path.join(base, "bnvae_jax", "xla")
    if not path:
        return
    path = os.path.expanduser(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        logging.warning("compilation cache %s not usable (%s); off", path, e.strerror)
        return
    jax.config.update("jax_compilation_cache_dir", path)
    # Our programs are small: keep every one that took a tenth of a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def check_output_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a file that can be written (its directory is created)."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    check_dir(path.parent, f"{what}'s directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} cannot be written (permissions)")
    return path


# -- console and log file ------------------------------------------------------

LOG_FILE = "log.txt"
# Loggers under this name write to the log file only (metrics, device lists).
FILE_ONLY = "bnvae_jax.file"


class _Console(logging.Handler):
    """Our INFO records and everyone's warnings (third-party INFO if asked).

    Records go through ``tqdm.write``, so a record never breaks a progress bar.
    """

    def __init__(self, level: int):
        super().__init__()
        self.level_others = level  # third-party records below this stay off

    def filter(self, record):
        name = record.name
        ours = name in ("root", "__main__") or name.startswith("bnvae_jax")
        if ours and not name.startswith(FILE_ONLY):
            return record.levelno >= logging.INFO
        return record.levelno >= self.level_others

    def emit(self, record):
        try:
            text = self.format(record)  # the message, then its traceback if any
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            tqdm.tqdm.write(text, file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging() -> None:
    """The console for people: progress bars, our own lines, warnings.

    Third-party INFO records (orbax, JAX) stay off the console unless
    ``--verbosity=0`` (``-v``; 1: DEBUG too) is given; ``log_to_file`` keeps
    everything.
    """
    present = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
    verbose = flags.FLAGS.verbosity if present else -1
    console_level = logging.WARNING if verbose < 0 else logging.INFO - 10 * verbose
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(min(logging.INFO, console_level))
    logging.getLogger("absl").setLevel(logging.NOTSET)
    root.addHandler(_Console(console_level))
    logging.captureWarnings(True)


def log_to_file(directory: str | os.PathLike, name: str = LOG_FILE) -> None:
    """Appends every record (third-party INFO too) to ``directory/name``."""
    path, root = pathlib.Path(directory) / name, logging.getLogger()
    if str(path.absolute()) in (getattr(h, "baseFilename", 0) for h in root.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s")
    )
    root.addHandler(handler)


def format_table(results: dict, splits: Sequence[str] = ("valid", "test")) -> str:
    """A plain-text table of the headline metrics of ``results.json``."""
    keys = [k for k in TABLE_KEYS if any(k in results.get(s, {}) for s in splits)]
    rows = [["split", *keys]]
    for split in (s for s in splits if results.get(s) is not None):
        cells = (results[split].get(k, "-") for k in keys)
        text = (f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells)
        rows.append([split, *text])
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys) + 1)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
