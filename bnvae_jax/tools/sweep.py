"""Sweeps: a grid of config overrides × seeds, one workdir and one process per run.

``python launch/sweep.py --config=configs/ptb.py --grid=launch/grids/ptb_table1.py
--out=runs/ptb_sweep`` (see launch/README.md). A grid file defines ``get_grid()``:
a list of dicts, each with a ``name`` and dotted config keys (``'model.gamma':
0.6``); a string value may hold ``{run:NAME}``, the workdir of entry NAME for the
same seed (its run goes first). Every (entry, seed) trains in
``OUT/<name>/seed_<seed>`` through ``python -m bnvae_jax.main``; a run with a
``results.json`` is finished and skipped, any other is started again, and the
train loop resumes it from its checkpoint. Runs go one per GPU group (set by
``CUDA_VISIBLE_DEVICES``), or one after another on a CPU. This module never
imports JAX: the parent only schedules.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import importlib.util
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from bnvae_jax import fileio
from bnvae_jax.errors import UserError

PAPER_SEEDS = (783435, 101, 202, 303, 404)  # the seeds of the paper's tables
RESULTS_FILE = "results.json"
MANIFEST_FILE = "sweep.json"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SEED_DIR = "seed_{seed}"
# A run starts once every run it names is in _READY; it is blocked by _BROKEN.
_READY = ("done", "finished")
_BROKEN = ("failed", "blocked", "interrupted")


class SweepError(UserError):
    """A grid, flag or sweep directory that cannot be run."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a grid: a name and its config overrides, in grid order."""

    name: str
    overrides: tuple[tuple[str, object], ...]


@dataclasses.dataclass(frozen=True)
class Grid:
    entries: tuple[Entry, ...]
    seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Run:
    """One (entry, seed): its workdir, resolved overrides and the runs it reads."""

    entry: str
    seed: int
    workdir: str
    overrides: tuple[str, ...]  # '--config.KEY=VALUE', seed last
    needs: tuple[str, ...] = ()  # names of runs that must finish first

    @property
    def name(self) -> str:
        return run_name(self.entry, self.seed)


def run_name(entry: str, seed: int) -> str:
    """A run's stable name, also its workdir below the sweep directory."""
    return f"{entry}/{_SEED_DIR.format(seed=seed)}"


@dataclasses.dataclass(frozen=True)
class Slot:
    """A worker: the GPUs it owns (``CUDA_VISIBLE_DEVICES``) or None (CPU)."""

    index: int
    gpus: str | None = None
    shared: bool = False  # several workers on these GPUs: no memory preallocation


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Where a run stands; ``status`` is one of ``STATUSES``."""

    status: str
    returncode: int | None = None
    wall_seconds: float | None = None
    gpus: str | None = None
    message: str = ""


# pending: not started; running; done: finished now; finished: had results.json;
# failed: non-zero exit; blocked: a run it needs failed; interrupted: by Ctrl-C.
STATUSES = (
    "pending",
    "running",
    "done",
    "finished",
    "failed",
    "blocked",
    "interrupted",
)


# --------------------------------------------------------------------------- grid


def _load_module(path: str, what: str):
    if not pathlib.Path(path).is_file():
        raise SweepError(f"{what} file not found: {path}")
    spec = importlib.util.spec_from_file_location("_bnvae_grid", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a grid file is user code: show its error as one line
        raise SweepError(f"{path}: {type(e).__name__}: {e}") from None
    return module


def parse_entry(raw: object, where: str) -> Entry:
    """Checks one grid dict and returns it as an ``Entry``."""
    if not isinstance(raw, Mapping):
        raise SweepError(f"{where}: an entry must be a dict, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SweepError(
            f"{where}: 'name' must be letters, digits and _.+- (got {name!r})"
        )
    overrides = []
    for key, value in raw.items():
        if key == "name":
            continue
        if not isinstance(key, str) or not _KEY.match(key) or key == "seed":
            raise SweepError(
                f"{where} ({name}): bad config key {key!r} (seeds come from --seeds)"
            )
        if not isinstance(value, str | int | float | bool):
            raise SweepError(
                f"{where} ({name}): {key}={value!r}: values are str, int, float or bool"
            )
        overrides.append((key, value))
    return Entry(name=name, overrides=tuple(overrides))


def load_grid(path: str) -> Grid:
    """Reads a grid file: ``get_grid()`` and, optionally, ``get_seeds()``."""
    module = _load_module(path, "grid")
    if not callable(getattr(module, "get_grid", None)):
        raise SweepError(f"{path}: defines no get_grid()")
    raw = module.get_grid()
    if not isinstance(raw, list | tuple) or not raw:
        raise SweepError(f"{path}: get_grid() must return a non-empty list of dicts")
    entries = tuple(parse_entry(r, f"{path}[{i}]") for i, r in enumerate(raw))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(f"{path}: duplicate entry names: {', '.join(duplicates)}")
    seeds = module.get_seeds() if hasattr(module, "get_seeds") else PAPER_SEEDS
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise SweepError(f"{path}: get_seeds() must return a list of ints")
    return Grid(entries=entries, seeds=tuple(seeds))


def placeholders(value: object) -> tuple[str, ...]:
    """The entry names a value refers to with ``{run:NAME}``."""
    if not isinstance(value, str):
        return ()
    names = []
    for inner in _PLACEHOLDER.findall(value):
        kind, _, name = inner.partition(":")
        if kind != "run" or not _NAME.match(name):
            raise SweepError(
                f"bad placeholder {{{inner}}} in {value!r} (known: {{run:NAME}})"
            )
        names.append(name)
    return tuple(names)


def dependencies(entry: Entry) -> tuple[str, ...]:
    return tuple(n for _, v in entry.overrides for n in placeholders(v))


def order_entries(entries: Sequence[Entry]) -> tuple[Entry, ...]:
    """Entries with every ``{run:NAME}`` target first, otherwise in grid order."""
    by_name = {e.name: e for e in entries}
    for entry in entries:
        for name in dependencies(entry):
            if name not in by_name:
                raise SweepError(
                    f"entry {entry.name}: {{run:{name}}} names no entry of the grid"
                )
    ordered, placed = [], set()
    while len(ordered) < len(entries):
        ready = [
            e
            for e in entries
            if e.name not in placed and set(dependencies(e)) <= placed
        ]
        if not ready:
            stuck = sorted(e.name for e in entries if e.name not in placed)
            raise SweepError(f"{{run:...}} placeholders form a cycle: {stuck}")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return tuple(ordered)


def select(entries: Sequence[Entry], only: Sequence[str]) -> tuple[Entry, ...]:
    """The entries named in ``only`` and every entry they depend on."""
    if not only:
        return tuple(entries)
    by_name = {e.name: e for e in entries}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise SweepError(f"--only: no entry named {', '.join(unknown)}")
    wanted, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(n for n in dependencies(by_name[name]) if n in by_name)
    return tuple(e for e in entries if e.name in wanted)


def format_value(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value) if isinstance(value, str) else repr(value)


def workdir_of(out: str, entry: str, seed: int) -> str:
    return str(pathlib.PurePath(out, run_name(entry, seed)))


def _resolve(value: str, out: str, seed: int) -> str:
    return _PLACEHOLDER.sub(
        lambda m: workdir_of(out, m.group(1).partition(":")[2], seed), value
    )


def expand(
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: str,
    common: Sequence[tuple[str, object]] = (),
) -> tuple[Run, ...]:
    """One ``Run`` per (entry, seed), dependencies first, entry-major.

    ``common`` overrides (from the command line) follow each entry's own, so
    they win; ``--config.seed`` comes last.
    """
    runs = []
    for entry in order_entries(entries):
        pairs = list(entry.overrides) + list(common)
        for seed in seeds:
            flags = [
                f"--config.{k}={_resolve(format_value(v), out, seed)}" for k, v in pairs
            ]
            flags.append(f"--config.seed={seed}")
            needs = tuple(run_name(n, seed) for _, v in pairs for n in placeholders(v))
            runs.append(
                Run(
                    entry=entry.name,
                    seed=seed,
                    workdir=workdir_of(out, entry.name, seed),
                    overrides=tuple(flags),
                    needs=needs,
                )
            )
    return tuple(runs)


def main_command(run: Run, config: str, python: str = sys.executable) -> list[str]:
    """The training command of one run."""
    return [
        python,
        "-m",
        "bnvae_jax.main",
        f"--config={config}",
        f"--workdir={run.workdir}",
        *run.overrides,
    ]


def is_finished(workdir: str | os.PathLike) -> bool:
    return (pathlib.Path(workdir) / RESULTS_FILE).is_file()


# ------------------------------------------------------------------------ devices


def parse_nvidia_smi(text: str) -> tuple[str, ...]:
    """GPU indices from ``nvidia-smi -L`` ("GPU 0: NVIDIA H100 (UUID: ...)")."""
    found = re.findall(r"^GPU (\d+):", text, flags=re.MULTILINE)
    return tuple(found)


def visible_gpus(
    env: Mapping[str, str], query: Callable[[], str | None]
) -> tuple[str, ...]:
    """The GPUs runs may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``query()``.

    ``query`` returns the output of ``nvidia-smi -L`` (None without a driver).
    """
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = env["CUDA_VISIBLE_DEVICES"].replace(" ", "").split(",")
        return tuple(i for i in ids if i and i != "-1")
    text = query()
    return parse_nvidia_smi(text) if text else ()


def nvidia_smi() -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def make_slots(
    gpus: Sequence[str], parallel: int | None, gpus_per_run: int = 1
) -> tuple[Slot, ...]:
    """Workers: one per group of ``gpus_per_run`` GPUs, or ``parallel`` of them.

    ``parallel`` None means one per GPU group (one in all without GPUs). More
    workers than groups share them round-robin, without memory preallocation.
    """
    if parallel is not None and parallel < 1:
        raise SweepError(f"--parallel must be >= 1 or auto, got {parallel}")
    if not gpus:
        return tuple(Slot(index=i) for i in range(parallel or 1))
    if gpus_per_run < 1 or gpus_per_run > len(gpus):
        raise SweepError(
            f"--gpus_per_run={gpus_per_run} but {len(gpus)} GPU(s) are visible"
        )
    groups = [
        ",".join(gpus[i : i + gpus_per_run])
        for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)
    ]
    count = parallel or len(groups)
    return tuple(
        Slot(index=i, gpus=groups[i % len(groups)], shared=count > len(groups))
        for i in range(count)
    )


def slot_env(slot: Slot, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run on ``slot``."""
    env = dict(base)
    env["PYTHONUNBUFFERED"] = "1"
    if slot.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpus
    if slot.shared:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


# ---------------------------------------------------------------------- execution


@dataclasses.dataclass(frozen=True)
class _Active:
    """A started run: its process, its worker and its open log files."""

    run: Run
    slot: Slot
    proc: subprocess.Popen
    started: float
    logs: tuple


Notify = Callable[[Run, Outcome, Mapping[str, Outcome]], None]


def _last_line(path: pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return _last_nonempty(tail)


def _start(run: Run, slot: Slot, argv: list[str], env: Mapping[str, str]) -> _Active:
    workdir = pathlib.Path(run.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    header = f"\n==== sweep {datetime.datetime.now().isoformat(timespec='seconds')}"
    header += f" CUDA_VISIBLE_DEVICES={slot.gpus} {shlex.join(argv)}\n"
    logs = []
    for name in (STDOUT_LOG, STDERR_LOG):
        # Appended to: a resumed run keeps the log of its earlier attempts.
        f = open(workdir / name, "a", encoding="utf-8")
        f.write(header)
        f.flush()
        logs.append(f)
    try:
        proc = subprocess.Popen(argv, stdout=logs[0], stderr=logs[1], env=env)
    except OSError as e:
        for f in logs:
            f.close()
        raise SweepError(f"cannot start {argv[0]}: {e}") from None
    return _Active(run, slot, proc, time.monotonic(), tuple(logs))


def _finish(active: _Active, returncode: int, interrupted: bool = False) -> Outcome:
    for f in active.logs:
        f.close()
    if interrupted:
        status, message = "interrupted", "stopped by the sweep; rerun it to resume"
    elif returncode != 0:
        status = "failed"
        message = _last_line(pathlib.Path(active.run.workdir) / STDERR_LOG)
    elif not is_finished(active.run.workdir):
        status, message = "failed", f"exited 0 without {RESULTS_FILE}"
    else:
        status, message = "done", ""
    wall = time.monotonic() - active.started
    return Outcome(status, returncode, wall, active.slot.gpus, message)


def _next_ready(
    runs: Sequence[Run], outcomes: dict[str, Outcome], notify: Notify
) -> Run | None:
    """The first pending run whose needs are met; blocks those that cannot be."""
    for run in runs:
        if outcomes[run.name].status != "pending":
            continue
        states = [outcomes[n].status if n in outcomes else None for n in run.needs]
        broken = [n for n, s in zip(run.needs, states) if s is None or s in _BROKEN]
        if broken:
            outcomes[run.name] = Outcome("blocked", message=f"needs {broken[0]}")
            notify(run, outcomes[run.name], outcomes)
        elif all(s in _READY for s in states):
            return run
    return None


def _stop(active: dict[int, _Active], outcomes: dict[str, Outcome], notify: Notify):
    """Ctrl-C: lets every run save its checkpoint (SIGINT), then records it."""
    for a in active.values():
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGINT)
    for a in active.values():
        try:
            rc = a.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            rc = a.proc.wait()
        outcomes[a.run.name] = _finish(a, rc, interrupted=True)
        notify(a.run, outcomes[a.run.name], outcomes)


def execute(
    runs: Sequence[Run],
    slots: Sequence[Slot],
    argv_of: Callable[[Run], list[str]],
    *,
    base_env: Mapping[str, str],
    notify: Notify = lambda run, outcome, outcomes: None,
    poll_seconds: float = 0.5,
) -> dict[str, Outcome]:
    """Runs every unfinished run, at most one per slot at a time.

    Runs start in ``runs`` order as soon as a slot is free and the runs they
    need are finished; a failure is recorded and the rest go on (runs that
    need it are blocked). ``notify`` sees every change of status.

    Returns:
      the outcome of every run, by name.
    """
    outcomes = {
        r.name: Outcome("finished" if is_finished(r.workdir) else "pending")
        for r in runs
    }
    active: dict[int, _Active] = {}
    try:
        while True:
            for index, a in list(active.items()):
                if (rc := a.proc.poll()) is not None:
                    del active[index]
                    outcomes[a.run.name] = _finish(a, rc)
                    notify(a.run, outcomes[a.run.name], outcomes)
            for slot in (s for s in slots if s.index not in active):
                run = _next_ready(runs, outcomes, notify)
                if run is None:
                    break
                active[slot.index] = _start(
                    run, slot, argv_of(run), slot_env(slot, base_env)
                )
                outcomes[run.name] = Outcome("running", gpus=slot.gpus)
                notify(run, outcomes[run.name], outcomes)
            if not active and _next_ready(runs, outcomes, notify) is None:
                return outcomes
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        _stop(active, outcomes, notify)
        raise


# ---------------------------------------------------------------- command line


@dataclasses.dataclass(frozen=True)
class Plan:
    """A sweep, ready to run: what the command line and the grid file resolve to."""

    config: str
    grid: str
    out: str
    entries: tuple[Entry, ...]
    seeds: tuple[int, ...]
    common: tuple[tuple[str, str], ...]
    runs: tuple[Run, ...]
    slots: tuple[Slot, ...]
    python: str


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SweepError(message)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="launch/sweep.py",
        allow_abbrev=False,
        description="Runs a grid of configs x seeds; --config.KEY=VALUE flags "
        "after the options apply to every run (e.g. the data files).",
    )
    p.add_argument("--config", required=True, help="config file (configs/*.py)")
    p.add_argument("--grid", required=True, help="grid file defining get_grid()")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--seeds", type=int, help="use the first N of the grid's seeds")
    p.add_argument("--seed_values", help="comma-separated seeds (instead of --seeds)")
    p.add_argument("--only", help="comma-separated entries (their needs are added)")
    p.add_argument("--parallel", default="auto", help="'auto' (one per GPU) or N")
    p.add_argument(
        "--gpus",
        help="GPU ids to use, e.g. 0,1 ('none': CPU); "
        "default: CUDA_VISIBLE_DEVICES, else nvidia-smi -L",
    )
    p.add_argument("--gpus_per_run", type=int, default=1, help="GPUs per run")
    p.add_argument("--python", default=sys.executable, help="interpreter of runs")
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    return p


def parse_common(extra: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--config.KEY=VALUE`` flags that apply to every run."""
    pairs = []
    for arg in extra:
        match = re.match(r"^--config\.([^=]+)=(.*)$", arg)
        if not match or not _KEY.match(match.group(1)):
            raise SweepError(f"unknown argument {arg!r} (want --config.KEY=VALUE)")
        if match.group(1) == "seed":
            raise SweepError("--config.seed: set seeds with --seeds or --seed_values")
        placeholders(match.group(2))
        pairs.append((match.group(1), match.group(2)))
    return tuple(pairs)


# Run by the runs' interpreter: loading a config imports the library (and JAX),
# which the scheduling process never does.
_CHECK_KEYS = """
import json, sys
from bnvae_jax import cli
from bnvae_jax import config as config_lib
from bnvae_jax import methods
from bnvae_jax.errors import UserError
try:
    config = cli.load_config_file(sys.argv[1])
    config_lib.check_override_keys(config, json.loads(sys.argv[2]))
    for name in json.loads(sys.argv[3]):
        methods.get_method(name)
except UserError as e:
    sys.exit(f"error: {e}")
"""


def check_keys(
    python: str, config_path: str, entries: Sequence[Entry], common, env
) -> None:
    """Every override names a key of the config and every method exists."""
    if not pathlib.Path(config_path).is_file():
        raise SweepError(f"config file not found: {config_path}")
    pairs = [p for e in entries for p in e.overrides] + list(common)
    keys = sorted({k for k, _ in pairs})
    names = sorted({str(v) for k, v in pairs if k == "method"})
    proc = subprocess.run(
        [python, "-c", _CHECK_KEYS, config_path, json.dumps(keys), json.dumps(names)],
        capture_output=True,
        text=True,
        env={**env, "JAX_PLATFORMS": "cpu"},
    )
    if proc.returncode != 0:
        last = _last_nonempty(proc.stderr) or f"exit code {proc.returncode}"
        raise SweepError(f"{config_path}: {last.removeprefix('error: ')}")


def _last_nonempty(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _choose_seeds(grid: Grid, count: int | None, values: str | None):
    if count is not None and values:
        raise SweepError("give --seeds or --seed_values, not both")
    if values:
        try:
            return tuple(int(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise SweepError(f"--seed_values={values}: want ints like 1,2") from None
    if count is None:
        return grid.seeds
    if not 1 <= count <= len(grid.seeds):
        raise SweepError(f"--seeds={count}: the grid has {len(grid.seeds)} seeds")
    return grid.seeds[:count]


def _parallel(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise SweepError(f"--parallel={text}: want 'auto' or a positive integer")
    return int(text)


KeyCheck = Callable[[str, str, Sequence[Entry], Sequence, Mapping[str, str]], None]


def make_plan(
    args: argparse.Namespace,
    extra: Sequence[str],
    env: Mapping[str, str],
    query: Callable[[], str | None] = nvidia_smi,
    check: KeyCheck = check_keys,
) -> Plan:
    """Resolves the command line and the grid file into runs and workers.

    ``query`` lists GPUs (``nvidia-smi -L``), ``check`` validates the override
    keys against the config; both are arguments so that tests can stand in.
    """
    common = parse_common(extra)
    grid = load_grid(args.grid)
    only = [n for n in (args.only or "").split(",") if n]
    entries = select(grid.entries, only)
    seeds = _choose_seeds(grid, args.seeds, args.seed_values)
    out = str(pathlib.PurePath(args.out))
    if pathlib.Path(out).exists() and not pathlib.Path(out).is_dir():
        raise SweepError(f"--out {out} is a file, not a directory")
    runs = expand(entries, seeds, out, common)
    if args.gpus is None:
        gpus = visible_gpus(env, query)
    else:
        gpus = tuple(g for g in args.gpus.split(",") if g and args.gpus != "none")
    slots = make_slots(gpus, _parallel(args.parallel), args.gpus_per_run)
    if shutil.which(args.python) is None:
        raise SweepError(f"--python={args.python}: no such interpreter")
    check(args.python, args.config, entries, common, env)
    return Plan(
        config=args.config,
        grid=args.grid,
        out=out,
        entries=entries,
        seeds=seeds,
        common=common,
        runs=runs,
        slots=slots,
        python=args.python,
    )


def _where(slots: Sequence[Slot]) -> str:
    if slots[0].gpus is None:
        return f"{len(slots)} CPU worker(s)"
    return f"{len(slots)} worker(s) on GPUs " + " ".join(s.gpus for s in slots)


def dry_run(plan: Plan) -> int:
    print(
        f"# {len(plan.runs)} runs ({len(plan.entries)} entries x "
        f"{len(plan.seeds)} seeds) in {plan.out}, {_where(plan.slots)}"
    )
    for run in plan.runs:
        done = "# finished, skipped: " if is_finished(run.workdir) else ""
        print(done + shlex.join(main_command(run, plan.config, plan.python)))
    return 0


def manifest(plan: Plan, outcomes: Mapping[str, Outcome], started: str) -> dict:
    """The sweep's JSON record: its inputs and every run's status."""
    return {
        "config": plan.config,
        "grid": plan.grid,
        "out": plan.out,
        "seeds": list(plan.seeds),
        "common_overrides": [f"--config.{k}={v}" for k, v in plan.common],
        "slots": [dataclasses.asdict(s) for s in plan.slots],
        "started": started,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        "entries": [
            {"name": e.name, "overrides": dict(e.overrides)} for e in plan.entries
        ],
        "runs": [
            {
                "name": r.name,
                "entry": r.entry,
                "seed": r.seed,
                "workdir": r.workdir,
                "needs": list(r.needs),
                "command": main_command(r, plan.config, plan.python),
                **dataclasses.asdict(outcomes[r.name]),
            }
            for r in plan.runs
        ],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _printer(plan: Plan, started: str) -> Notify:
    """Prints each change of status and rewrites the manifest."""
    path = pathlib.Path(plan.out) / MANIFEST_FILE
    total = len(plan.runs)

    def notify(run: Run, outcome: Outcome, outcomes: Mapping[str, Outcome]):
        settled = sum(o.status not in ("pending", "running") for o in outcomes.values())
        where = f" on GPU {outcome.gpus}" if outcome.gpus is not None else ""
        text = {
            "running": f"start {run.name}{where}",
            "done": f"done {run.name} in {_duration(outcome.wall_seconds)}",
            "failed": f"FAILED {run.name} (exit {outcome.returncode}, logs in "
            f"{run.workdir}): {outcome.message}",
            "blocked": f"BLOCKED {run.name}: {outcome.message} did not finish",
            "interrupted": f"interrupted {run.name}",
        }[outcome.status]
        print(f"[{settled}/{total}] {text}", flush=True)
        fileio.write_json_atomic(path, manifest(plan, outcomes, started))

    return notify


@contextlib.contextmanager
def sweep_lock(out: str):
    """Holds ``OUT/.sweep.lock``: two sweeps in one directory would train a run twice.

    The lock dies with the process (also on SIGKILL), so a rerun after a crash
    is never refused.
    """
    path = pathlib.Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise SweepError(f"--out {out} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / ".sweep.lock", "w")  # closed by the with below
    except OSError as e:
        raise SweepError(f"--out {out} cannot be written: {e.strerror}") from None
    with lock as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"another sweep is running in {out}") from None
        yield


def run_plan(plan: Plan, argv_of: Callable[[Run], list[str]], env) -> int:
    """Runs a plan; 0 when every run finished, 1 when some failed."""
    started = datetime.datetime.now().isoformat(timespec="seconds")
    notify = _printer(plan, started)
    finished = sum(is_finished(r.workdir) for r in plan.runs)
    print(
        f"sweep: {len(plan.runs)} runs in {plan.out} ({finished} finished "
        f"before), {_where(plan.slots)}",
        flush=True,
    )
    outcomes = execute(plan.runs, plan.slots, argv_of, base_env=env, notify=notify)
    fileio.write_json_atomic(
        pathlib.Path(plan.out) / MANIFEST_FILE, manifest(plan, outcomes, started)
    )
    bad = [n for n, o in outcomes.items() if o.status in _BROKEN]
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"sweep: {summary}; manifest {pathlib.Path(plan.out) / MANIFEST_FILE}")
    print(f"tables: python launch/report.py {plan.out}")
    if bad:
        print("not finished: " + " ".join(bad), file=sys.stderr)
    return 1 if bad else 0


def main(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    check: KeyCheck = check_keys,
) -> int:
    """``launch/sweep.py``: exit 0 (all finished), 1 (a run failed), 2 (bad input)."""
    env = dict(os.environ if env is None else env)
    try:
        args, extra = make_parser().parse_known_args(argv)
        plan = make_plan(args, extra, env, check=check)
        if args.dry_run:
            with fileio.quiet_broken_pipe():
                return dry_run(plan)
            return 0
        with sweep_lock(plan.out):
            return run_plan(
                plan, lambda run: main_command(run, plan.config, plan.python), env
            )
    except UserError as e:
        message = str(e).strip().splitlines()
        print(f"error: {message[0] if message else repr(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
