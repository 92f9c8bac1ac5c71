"""The paper's tables from sweep directories: ``python launch/report.py SWEEP...``.

Table 1/8: one row per grid entry, IW-NLL, KL, MI, AU, -ELBO and PPL as mean ±
sample standard deviation (n - 1) over the seeds that finished. Table 2: the
training time per run and its ratio to a baseline entry (``vae``). Both are
printed and written to ``SWEEP/tables.md`` and ``SWEEP/tables.json``. Several
sweep directories (e.g. one per node, each with its own seeds) make one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence

from bnvae_jax import fileio
from bnvae_jax.errors import UserError

# (results key, column title, decimals): the split's metrics of results.json.
TABLE1_COLUMNS = (
    ("iw_nll", "NLL (IW)", 2),
    ("kl", "KL", 2),
    ("mi", "MI", 2),
    ("au", "AU", 1),
    ("elbo_nll", "−ELBO", 2),
    ("iw_ppl", "PPL", 2),
)
MISSING = "–"
_SEED_DIR = re.compile(r"^seed_(\d+)$")


class ReportError(UserError):
    """A sweep directory or flag the report cannot use."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One finished run: its entry, seed and ``results.json``."""

    entry: str
    seed: int | None
    path: str
    results: Mapping


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for one value) of n values."""

    mean: float
    std: float | None
    n: int


def summarize(values: Sequence[float]) -> Stat | None:
    """Mean ± sample std (n - 1) of the finite ``values``; None when there are none."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return None
    n = len(finite)
    mean = sum(finite) / n
    if n == 1:
        return Stat(mean, None, 1)
    return Stat(mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)), n)


def _number(value) -> float | None:
    """A metric as a float; None for a metric the method does not define."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # fileio writes NaN/inf as strings
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _load(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from None


def _entry_and_seed(rel: pathlib.PurePath, results: Mapping):
    match = _SEED_DIR.match(rel.name)
    if match and str(rel.parent) != ".":
        return str(rel.parent), int(match.group(1))
    seed = (results.get("config") or {}).get("seed")
    return str(rel), seed if isinstance(seed, int) else None


def find_results(sweep_dir: str | pathlib.Path) -> list[RunResult]:
    """Every ``results.json`` below ``sweep_dir`` (``<entry>/seed_<seed>/``)."""
    root = pathlib.Path(sweep_dir)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory")
    found = []
    for path in sorted(root.rglob("results.json")):
        results = _load(path)
        entry, seed = _entry_and_seed(path.parent.relative_to(root), results)
        found.append(RunResult(entry, seed, str(path), results))
    return found


def read_manifest(sweep_dir: str | pathlib.Path) -> dict:
    """The sweep's ``sweep.json`` ({} when the directory has none)."""
    path = pathlib.Path(sweep_dir) / "sweep.json"
    return _load(path) if path.is_file() else {}


def entry_order(runs: Sequence[RunResult], manifest: Mapping) -> list[str]:
    """The grid's order from the manifest, then any other entry alphabetically."""
    listed = [e["name"] for e in manifest.get("entries", [])]
    others = sorted({r.entry for r in runs} - set(listed))
    return listed + others


def _by_entry(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.entry, []).append(run)
    return groups


def table1(runs: Sequence[RunResult], order: Sequence[str], split: str) -> list[dict]:
    """Rows of Table 1: per entry, each metric's ``Stat`` (None: undefined)."""
    groups = _by_entry(runs)
    rows = []
    for entry in order:
        members = groups.get(entry, [])
        metrics = {}
        for key, _, _ in TABLE1_COLUMNS:
            values = [_number((r.results.get(split) or {}).get(key)) for r in members]
            metrics[key] = summarize([v for v in values if v is not None])
        rows.append(
            {
                "entry": entry,
                "seeds": sorted(r.seed for r in members if r.seed is not None),
                "n": len(members),
                "metrics": metrics,
            }
        )
    return rows


def _stat_of(runs: Sequence[RunResult], key: str) -> Stat | None:
    values = [_number(r.results.get(key)) for r in runs]
    return summarize([v for v in values if v is not None])


def table2(
    runs: Sequence[RunResult], order: Sequence[str], baseline: str
) -> list[dict]:
    """Rows of Table 2: training seconds and epochs, and ratios to ``baseline``."""
    groups = _by_entry(runs)
    base = _stat_of(groups.get(baseline, []), "train_seconds")
    base_epoch = _per_epoch(groups.get(baseline, []))
    rows = []
    for entry in order:
        members = groups.get(entry, [])
        seconds = _stat_of(members, "train_seconds")
        per_epoch = _per_epoch(members)
        rows.append(
            {
                "entry": entry,
                "n": len(members),
                "train_seconds": seconds,
                "epochs": _stat_of(members, "epochs_run"),
                "seconds_per_epoch": per_epoch,
                "ratio": _ratio(seconds, base),
                "ratio_per_epoch": _ratio(per_epoch, base_epoch),
                "num_devices": sorted(
                    {r.results.get("num_devices") for r in members} - {None}
                ),
            }
        )
    return rows


def _per_epoch(runs: Sequence[RunResult]) -> Stat | None:
    values = []
    for r in runs:
        seconds, epochs = (
            _number(r.results.get(k)) for k in ("train_seconds", "epochs_run")
        )
        if seconds is not None and epochs:
            values.append(seconds / epochs)
    return summarize(values)


def _ratio(value: Stat | None, base: Stat | None) -> float | None:
    if value is None or base is None or base.mean <= 0:
        return None
    return value.mean / base.mean


def format_stat(stat: Stat | None, decimals: int, n: int | None = None) -> str:
    """``mean ± std`` (just the mean for one seed; "(k)" when k < n seeds had it)."""
    if stat is None:
        return MISSING
    text = f"{stat.mean:.{decimals}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{decimals}f}"
    if n is not None and stat.n < n:
        text += f" ({stat.n})"
    return text


def format_duration(seconds: float | None) -> str:
    """``2h 05m``, ``7m 12s`` or ``41s``."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table1(rows: Sequence[dict]) -> str:
    header = ["entry", "seeds"] + [title for _, title, _ in TABLE1_COLUMNS]
    body = [
        [row["entry"], str(row["n"])]
        + [
            format_stat(row["metrics"][key], decimals, row["n"])
            for key, _, decimals in TABLE1_COLUMNS
        ]
        for row in rows
    ]
    return _markdown(header, body)


def markdown_table2(rows: Sequence[dict], baseline: str) -> str:
    header = ["entry", "seeds", "train time", "epochs", "per epoch"]
    header += [f"× {baseline}", f"× {baseline} per epoch", "devices"]
    body = []
    for row in rows:
        seconds, per_epoch = row["train_seconds"], row["seconds_per_epoch"]
        body.append(
            [
                row["entry"],
                str(row["n"]),
                format_duration(seconds.mean if seconds else None),
                format_stat(row["epochs"], 1),
                format_duration(per_epoch.mean if per_epoch else None),
                MISSING if row["ratio"] is None else f"{row['ratio']:.2f}",
                MISSING
                if row["ratio_per_epoch"] is None
                else f"{row['ratio_per_epoch']:.2f}",
                ",".join(str(d) for d in row["num_devices"]) or MISSING,
            ]
        )
    return _markdown(header, body)


def unfinished(manifest: Mapping, runs: Sequence[RunResult]) -> list[str]:
    """Runs of the manifest without ``results.json``, with their status."""
    done = {(r.entry, r.seed) for r in runs}
    return [
        f"{r['name']} ({r.get('status', '?')})"
        for r in manifest.get("runs", [])
        if (r.get("entry"), r.get("seed")) not in done
    ]


def _jsonable_rows(rows: Sequence[dict]) -> list[dict]:
    def convert(value):
        if isinstance(value, Stat):
            return dataclasses.asdict(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return [convert(row) for row in rows]


def build(
    sweep_dirs: Sequence[str], split: str, baseline: str | None
) -> tuple[str, dict]:
    """The Markdown text and JSON data of both tables over one or more sweeps."""
    runs = [r for d in sweep_dirs for r in find_results(d)]
    if not runs:
        where = ", ".join(sweep_dirs)
        raise ReportError(f"{where}: no finished run (no results.json below it)")
    manifests = [read_manifest(d) for d in sweep_dirs]
    merged = {
        "entries": [e for m in manifests for e in m.get("entries", [])],
        "runs": [r for m in manifests for r in m.get("runs", [])],
    }
    order = list(dict.fromkeys(entry_order(runs, merged)))
    if baseline is not None and baseline not in order:
        raise ReportError(f"--baseline={baseline}: no such entry in the sweep")
    base = baseline or "vae"
    rows1, rows2 = table1(runs, order, split), table2(runs, order, base)
    missing = unfinished(merged, runs)
    parts = [
        f"## Table 1/8 ({split}; mean ± sample std over seeds)",
        markdown_table1(rows1),
        f"## Table 2 (training time; ratio to {base})",
        markdown_table2(rows2, base),
    ]
    if base not in order:
        parts.append(f"No entry named {base}: ratios are {MISSING}.")
    if missing:
        parts.append("Not finished: " + ", ".join(missing))
    data = {
        "sweeps": [str(d) for d in sweep_dirs],
        "split": split,
        "baseline": base,
        "table1": _jsonable_rows(rows1),
        "table2": _jsonable_rows(rows2),
        "unfinished": missing,
    }
    return "\n\n".join(parts) + "\n", data


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ReportError(message)


def main(argv: Sequence[str]) -> int:
    """``launch/report.py SWEEP...``: exit 0, or 2 on bad input."""
    parser = _Parser(prog="launch/report.py", allow_abbrev=False)
    parser.add_argument(
        "sweeps", nargs="+", help="sweep directories (launch/sweep.py --out)"
    )
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument("--baseline", help="entry for the time ratios (default vae)")
    parser.add_argument(
        "--out", help="directory for tables.md/json (default: the one SWEEP)"
    )
    try:
        args = parser.parse_args(argv)
        if args.out is None and len(args.sweeps) > 1:
            raise ReportError("several sweep directories: say where with --out")
        text, data = build(args.sweeps, args.split, args.baseline)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out or args.sweeps[0])
    fileio.write_text_atomic(out / "tables.md", text)
    fileio.write_json_atomic(out / "tables.json", data)
    print(text + f"\nwritten: {out / 'tables.md'}, {out / 'tables.json'}")
    return 0
