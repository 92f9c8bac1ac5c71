"""Sweeps: every entry of a grid file times every seed, one training run each.

``python -m bnvae_jax.sweep --config=configs/ptb.py --grid=GRID --out=DIR``, then
``--config.KEY=VALUE`` flags for every run (see launch/README.md). A grid file
defines ``sweep(add)``, which calls ``add(name, **overrides)`` once per entry;
the overrides are dotted config keys (``**{"model.gamma": 0.6}``), and a string
value may hold ``{run:NAME}``: the workdir of entry NAME for the same seed, whose
run then goes first. ``SEEDS`` in the file lists the seeds (default: the paper's
five). Every (entry, seed) trains in ``OUT/<name>/seed_<seed>`` through
``python -m bnvae_jax.main``, the command line's overrides replacing the grid's.
A run with ``results.json`` is finished and skipped; any other starts again and
resumes from its checkpoint, so rerunning the command resumes the sweep. Runs go
one per GPU group (``CUDA_VISIBLE_DEVICES`` set per run) or one after another on
a CPU; the sweep itself never starts JAX on a device. ``OUT/sweep.json`` records
every run's command and status. Exit status: 0 when every run finished, 1 when
one did not, 2 on bad input.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import fcntl
import graphlib
import itertools
import os
import pathlib
import re
import runpy
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from absl import app, flags
from ml_collections import config_flags

from bnvae_jax import cli, fileio, methods
from bnvae_jax import config as config_lib
from bnvae_jax.errors import UserError

PAPER_SEEDS = (783435, 101, 202, 303, 404)
RESULTS_FILE, MANIFEST_FILE = "results.json", "sweep.json"
STDOUT_LOG, STDERR_LOG = "stdout.log", "stderr.log"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_READY, _BROKEN = ("done", "finished"), ("failed", "blocked", "interrupted")


@dataclasses.dataclass(frozen=True)
class Run:
    """One (entry, seed): its workdir, its training command and the runs it needs."""

    name: str  # '<entry>/seed_<seed>', also its workdir below the sweep directory
    workdir: str
    command: tuple[str, ...]  # python -m bnvae_jax.main ... --config.seed=SEED
    needs: tuple[str, ...]


def needs_of(overrides: Mapping[str, object]) -> list[str]:
    """The entries that the ``{run:NAME}`` placeholders of ``overrides`` name."""
    names = []
    for value in (v for v in overrides.values() if isinstance(v, str)):
        for inner in _PLACEHOLDER.findall(value):
            kind, _, name = inner.partition(":")
            if kind != "run" or not _NAME.fullmatch(name):
                raise UserError(
                    f"bad placeholder {{{inner}}} in {value!r} ({{run:NAME}})"
                )
            names.append(name)
    return names


def load_grid(path: str) -> tuple[dict[str, dict], tuple[int, ...]]:
    """A grid file's entries ``{name: overrides}``, in ``add`` order, and seeds."""
    if not pathlib.Path(path).is_file():
        raise UserError(f"grid file not found: {path}")
    added = {}

    def add(name: str, **overrides):
        where = f"{path}: entry {name!r}"
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in added:
            raise UserError(f"{where}: taken, or not letters, digits and _.+-")
        for key, value in overrides.items():
            if key == "seed" or not _KEY.fullmatch(key):
                raise UserError(f"{where}: {key!r} is no config key (seeds: SEEDS)")
            if not isinstance(value, str | int | float | bool):
                raise UserError(f"{where}: {key}={value!r}: want str/int/float/bool")
        added[name] = overrides

    try:
        module = runpy.run_path(path)
        if not callable(module.get("sweep")):
            raise UserError(f"{path}: defines no sweep(add)")
        module["sweep"](add)
    except UserError:
        raise
    except Exception as e:  # a grid file is user code: its error in one line
        raise UserError(f"{path}: {type(e).__name__}: {e}") from None
    seeds = module.get("SEEDS", PAPER_SEEDS)
    if not added or not seeds or not all(type(s) is int for s in seeds):
        raise UserError(f"{path}: sweep(add) adds no entry, or SEEDS are not ints")
    graph = {name: needs_of(overrides) for name, overrides in added.items()}
    if missing := sorted({n for needs in graph.values() for n in needs} - set(graph)):
        raise UserError(f"{path}: {{run:{missing[0]}}} names no entry")
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise UserError(f"{path}: {{run:NAME}} in a cycle: {e.args[1]}") from None
    return added, tuple(seeds)


def select(entries: Mapping[str, dict], only: Sequence[str]) -> dict[str, dict]:
    """The entries named in ``only`` and those they need (all when it is empty)."""
    if unknown := [n for n in only if n not in entries]:
        raise UserError(f"--only: no entry named {', '.join(unknown)}")
    wanted, todo = set(), list(only or entries)
    while todo:
        if (name := todo.pop()) not in wanted:
            wanted.add(name)
            todo += needs_of(entries[name])
    return {n: o for n, o in entries.items() if n in wanted}


def workdir_of(out: str, entry: str, seed: int) -> str:
    return str(pathlib.PurePath(out, entry, f"seed_{seed}"))


def _text(value: object, out: str, seed: int) -> str:
    """A value as a flag's text, ``{run:NAME}`` replaced by that run's workdir."""
    text = value if isinstance(value, str) else repr(value)
    return _PLACEHOLDER.sub(lambda m: workdir_of(out, m[1][4:], seed), text)


def expand(
    entries: Mapping[str, dict],
    seeds: Sequence[int],
    out: str,
    config: str,
    common: Mapping = {},
) -> list[Run]:
    """One run per (entry, seed), entry by entry.

    Its command trains from the ``config`` file with ``--config.KEY=VALUE`` flags:
    the entry's overrides, ``common`` (which replaces them) and the seed.
    """
    runs = []
    for (entry, overrides), seed in itertools.product(entries.items(), seeds):
        workdir = workdir_of(out, entry, seed)
        values = {**overrides, **common, "seed": seed}
        flags_ = [f"--config.{k}={_text(v, out, seed)}" for k, v in values.items()]
        command = (sys.executable, "-m", "bnvae_jax.main", f"--config={config}")
        needs = tuple(f"{n}/seed_{seed}" for n in needs_of(overrides))
        command += (f"--workdir={workdir}", *flags_)
        runs.append(Run(f"{entry}/seed_{seed}", workdir, command, needs))
    return runs


def is_finished(run: Run) -> bool:
    return (pathlib.Path(run.workdir) / RESULTS_FILE).is_file()


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` if set, else the GPUs ``nvidia-smi -L`` lists."""
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = env["CUDA_VISIBLE_DEVICES"].replace(" ", "").split(",")
        return [i for i in ids if i and i != "-1"]
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    except OSError:  # no driver
        return []
    return re.findall(r"^GPU (\d+):", smi.stdout, flags=re.MULTILINE)


def workers(gpus: Sequence[str], parallel: int | None, per_run: int = 1) -> list:
    """The ``CUDA_VISIBLE_DEVICES`` of each worker (None: a CPU worker).

    One worker per group of ``per_run`` GPUs (one in all without GPUs), or
    ``parallel`` workers, which then share the groups round-robin.
    """
    if not gpus:
        return [None] * (parallel or 1)
    if per_run > len(gpus):
        raise UserError(f"--gpus_per_run={per_run} but {len(gpus)} GPU(s) are visible")
    starts = range(0, len(gpus) - per_run + 1, per_run)
    groups = [",".join(gpus[i : i + per_run]) for i in starts]
    return [groups[i % len(groups)] for i in range(parallel or len(groups))]


def _start(run: Run, env: Mapping, slots: Sequence, i: int):
    """Starts ``run`` on worker ``i``; its output is appended to its logs."""
    env, gpus = {**env, "PYTHONUNBUFFERED": "1"}, slots[i]
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
        if slots.count(gpus) > 1:  # workers share these GPUs
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    pathlib.Path(run.workdir).mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    header = f"\n==== sweep {now} CUDA_VISIBLE_DEVICES={gpus} {shlex.join(run.command)}"
    # Appended to: a resumed run keeps the logs of its earlier tries.
    logs = [open(pathlib.Path(run.workdir, n), "a") for n in (STDOUT_LOG, STDERR_LOG)]
    for f in logs:
        print(header, file=f, flush=True)
    proc = subprocess.Popen(run.command, stdout=logs[0], stderr=logs[1], env=env)
    return run, proc, time.monotonic(), logs


def _settle(active, records: dict, notify, interrupted: bool = False) -> None:
    """Records (and notifies) the end of a run whose process has ended."""
    run, proc, started, logs = active
    for f in logs:
        f.close()
    status, message = "done", ""
    if interrupted:
        status = "interrupted"
    elif proc.returncode:
        text = pathlib.Path(run.workdir, STDERR_LOG).read_text(errors="replace")
        status, message = "failed", text.strip().rsplit("\n", 1)[-1].strip()[:300]
    elif not is_finished(run):
        status, message = "failed", f"exited 0 without {RESULTS_FILE}"
    wall = round(time.monotonic() - started, 1)
    records[run.name] |= dict(
        status=status, returncode=proc.returncode, wall_seconds=wall, message=message
    )
    notify(run, records)


def _next(runs: Sequence[Run], records: dict, notify) -> Run | None:
    """The first pending run whose needs have finished; blocks those that cannot."""
    for run in (r for r in runs if records[r.name]["status"] == "pending"):
        states = [records[n]["status"] for n in run.needs]
        if broken := [n for n, s in zip(run.needs, states) if s in _BROKEN]:
            records[run.name] = {"status": "blocked", "message": f"needs {broken[0]}"}
            notify(run, records)
        elif all(s in _READY for s in states):
            return run
    return None


def execute(
    runs: Sequence[Run],
    slots: Sequence[str | None],
    env: Mapping[str, str],
    notify: Callable[[Run, dict], None] = lambda run, records: None,
    poll_seconds: float = 0.5,
) -> dict[str, dict]:
    """Runs every unfinished run in ``runs`` order, one per worker at a time.

    A run starts once a worker is free and the runs it needs have finished; a
    failure is recorded and the others go on. On Ctrl-C every run gets SIGINT
    (it saves a checkpoint) and is recorded as interrupted, then
    KeyboardInterrupt is raised. ``slots`` are the workers' GPUs; several
    workers on one group do not preallocate memory.

    Returns:
      ``{run name: record}``; ``record["status"]`` is pending, running, done,
      finished (had results.json), failed, blocked (a run it needs failed) or
      interrupted, with the exit code, wall seconds, GPUs and a message.
    """
    records = {
        r.name: {"status": "finished" if is_finished(r) else "pending"} for r in runs
    }
    active = {}  # worker index -> (run, process, start time, log files)
    # Ctrl-C sets a flag: an exception could land anywhere, even in a callback
    # that swallows it (JAX's, imported with the config).
    stop = []
    previous = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        while not stop:
            for i, a in list(active.items()):
                if a[1].poll() is not None:
                    _settle(active.pop(i), records, notify)
            for i in (i for i in range(len(slots)) if i not in active):
                if (run := _next(runs, records, notify)) is None:
                    break
                active[i] = _start(run, env, slots, i)
                records[run.name] = {"status": "running", "gpus": slots[i]}
                notify(run, records)
            if not active and _next(runs, records, notify) is None:
                return records
            time.sleep(poll_seconds)
    finally:
        signal.signal(signal.SIGINT, previous)
    for a in active.values():
        a[1].send_signal(signal.SIGINT)  # a no-op for an ended process
    for a in active.values():
        try:
            a[1].wait(timeout=120)
        except subprocess.TimeoutExpired:
            a[1].kill()
            a[1].wait()
        _settle(a, records, notify, interrupted=True)
    raise KeyboardInterrupt


def _where(slots: Sequence[str | None]) -> str:
    where = f"GPUs {' '.join(slots)}" if slots[0] else "the CPU"
    return f"{len(slots)} at a time on {where}"


def run_sweep(head: dict, runs, slots, env, poll_seconds=0.5) -> int:
    """Runs a sweep in ``head["out"]``, where no other sweep may run meanwhile.

    Every change of a run's status is printed and rewrites ``sweep.json``:
    ``head`` and every run's command and record. Returns 0 when every run has
    finished, else 1.
    """
    out = cli.check_dir(head["out"], "--out")

    def write(records):
        now = datetime.datetime.now().isoformat(timespec="seconds")
        rows = [dataclasses.asdict(r) | records[r.name] for r in runs]
        fileio.write_json_atomic(
            out / MANIFEST_FILE, head | {"updated": now, "runs": rows}
        )

    def notify(run, records):
        write(records)
        r, note = records[run.name], ""
        if r["status"] == "running" and r["gpus"]:
            note = f" on GPU {r['gpus']}"
        elif r["status"] == "done":
            note = f" in {datetime.timedelta(seconds=round(r['wall_seconds']))}"
        elif r["status"] == "failed":
            note = f" (exit {r['returncode']}; logs in {run.workdir}): {r['message']}"
        elif r["status"] == "blocked":
            note = f": {r['message']}"
        settled = sum(x["status"] in _READY + _BROKEN for x in records.values())
        print(f"[{settled}/{len(runs)}] {r['status']} {run.name}{note}", flush=True)

    with open(out / ".sweep.lock", "w") as lock:
        try:  # the lock dies with the process (SIGKILL too): reruns are never refused
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is running in {out}") from None
        finished = sum(map(is_finished, runs))
        print(
            f"sweep: {len(runs)} runs ({finished} finished) in {out}, {_where(slots)}"
        )
        records = execute(runs, slots, env, notify, poll_seconds)
        write(records)
    counts = collections.Counter(r["status"] for r in records.values())
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"sweep: {summary}; tables: python -m bnvae_jax.report {out}")
    if bad := [n for n, r in records.items() if r["status"] in _BROKEN]:
        print("not finished: " + " ".join(bad), file=sys.stderr)
    return 1 if bad else 0


def main(argv):
    F = flags.FLAGS
    cli.setup_logging()
    with cli.user_errors():
        if argv[1:]:
            raise UserError(f"unexpected argument {argv[1]!r}")
        common = config_flags.get_override_values(F["config"])
        if "seed" in common:
            raise UserError("--config.seed: set seeds with --seeds or --seed_values")
        entries, seeds = load_grid(F.grid)
        entries = select(entries, F.only)
        keys = sorted({k for o in entries.values() for k in o})
        config_lib.check_override_keys(F.config, keys)
        for overrides in entries.values():
            methods.get_method(str((overrides | common).get("method", F.config.method)))
        if F.seeds is not None and F.seeds > len(seeds):
            raise UserError(f"--seeds={F.seeds}: the grid has {len(seeds)} seeds")
        seeds = tuple(map(int, F.seed_values or ())) or seeds[: F.seeds]
        out = str(pathlib.PurePath(F.out))
        config = config_flags.get_config_filename(F["config"])
        runs = expand(entries, seeds, out, config, common)
        slots = workers(visible_gpus(os.environ), F.parallel, F.gpus_per_run)
        if F.dry_run:
            with fileio.quiet_broken_pipe():
                print(
                    f"# {len(runs)} runs ({len(entries)} entries x {len(seeds)} "
                    f"seeds) in {out}, {_where(slots)}"
                )
                for run in runs:
                    done = "# finished, skipped: " if is_finished(run) else ""
                    print(done + shlex.join(run.command))
            return 0
        listed = [{"name": n, "overrides": o} for n, o in entries.items()]
        head = dict(config=config, grid=F.grid, out=out, seeds=seeds, entries=listed)
        return run_sweep(head, runs, slots, os.environ)


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        "config", None, "Config of the runs; --config.KEY=VALUE applies to all."
    )
    flags.DEFINE_string("grid", None, "Grid file defining sweep(add).")
    flags.DEFINE_string("out", None, "Sweep directory (OUT/<entry>/seed_<seed>/).")
    flags.DEFINE_integer("seeds", None, "The grid's first N seeds.", lower_bound=1)
    flags.DEFINE_list("seed_values", None, "These seeds instead of the grid's.")
    flags.register_validator(
        "seed_values",
        lambda v: v is None or all(re.fullmatch(r"-?\d+", s) for s in v),
        "want ints like 1,2",
    )
    flags.mark_flags_as_mutual_exclusive(["seeds", "seed_values"])
    flags.DEFINE_list("only", [], "Only these entries (and the entries they need).")
    flags.DEFINE_integer(
        "parallel", None, "Runs at a time (default: one a GPU group).", lower_bound=1
    )
    flags.DEFINE_integer(
        "gpus_per_run", 1, "GPUs a run (data parallel).", lower_bound=1
    )
    flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
    flags.mark_flags_as_required(["config", "grid", "out"])
    app.run(main, flags_parser=cli.make_flags_parser())
