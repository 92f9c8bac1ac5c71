"""Tables of finished runs: ``python -m bnvae_jax.report PATH...``.

A PATH is a run directory (or its ``results.json``), a row of its own, or a
sweep directory of ``bnvae_jax.sweep``, whose runs in ``<entry>/seed_<seed>/``
make one row per entry (several sweeps, e.g. one per node, merge). Table 1/8,
per split: the method, and IW-NLL, PPL, −ELBO, rec, KL, MI and AU as mean ±
sample standard deviation (n − 1) over the row's runs. Table 2: training time,
epochs, time per epoch, both times as ratios to a baseline row (``vae`` if there
is one), throughput and devices. The text is printed and, with ``--out`` or for
one sweep directory, written to ``tables.md`` and ``tables.json`` there.
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import re
from collections.abc import Iterable, Sequence

from absl import app, flags

from bnvae_jax import cli, fileio
from bnvae_jax.errors import UserError

MISSING = "–"
# (results key, column title, decimals) of Table 1/8.
METRICS = (
    ("iw_nll", "NLL (IW)", 2),
    ("iw_ppl", "PPL", 2),
    ("elbo_nll", "−ELBO", 2),
    ("rec", "rec", 2),
    ("kl", "KL", 2),
    ("mi", "MI", 2),
    ("au", "AU", 1),
)


def load(path: str | pathlib.Path) -> dict:
    """A run's ``results.json`` (``path``: the file or the run directory)."""
    path = pathlib.Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(fileio.read_text(path))
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(results, dict):
        raise UserError(f"{path}: not a results file (no JSON object)")
    return results


def find_runs(path: str) -> list[tuple[str, str, dict]]:
    """``(row, run, results)`` of the run at ``path`` or of every run below it.

    A run given itself is named by its path and is a row of its own; a run
    below a sweep directory is named by its path there, and one in
    ``<entry>/seed_<seed>/`` belongs to the row of its entry.
    """
    root = pathlib.Path(path)
    if not root.is_dir() or (root / "results.json").exists():
        run = str(root).removesuffix("/results.json")
        return [(run, run, load(root))]
    found = []
    for file in sorted(root.rglob("results.json")):
        run = file.parent.relative_to(root)
        seeded = re.fullmatch(r"seed_\d+", run.name) and run.parent.name
        found.append((str(run.parent if seeded else run), str(run), load(file)))
    if not found:
        raise UserError(f"{root}: no results.json below it (has a run finished?)")
    return found


def _seed(results: dict) -> int | None:
    seed = (results.get("config") or {}).get("seed")
    return seed if type(seed) is int else None


def _number(value) -> float | None:
    """A metric as a float (``fileio`` writes NaN as a string); None if absent."""
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def summarize(values: Iterable[float | None]) -> dict | None:
    """``{mean, std, n}`` of the finite values (std: n − 1; None for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    n, mean = len(finite), sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def format_stat(stat: dict | None, decimals: int, n: int = 0) -> str:
    """``mean ± std``, and "(k)" when only k of the row's n runs have the value."""
    if stat is None:
        return MISSING
    text = f"{stat['mean']:.{decimals}f}"
    if stat["std"] is not None:
        text += f" ± {stat['std']:.{decimals}f}"
    return text + (f" ({stat['n']})" if stat["n"] < n else "")


def format_duration(stat: dict | None) -> str:
    """The mean of ``stat`` (seconds) as ``h:mm:ss``."""
    if stat is None:
        return MISSING
    return str(datetime.timedelta(seconds=round(stat["mean"])))


def _values(results: dict) -> dict[str, float | None]:
    """A run's numbers: ``SPLIT/METRIC``, time, epochs, throughput."""
    keys = ("train_seconds", "epochs_run", "train_tokens_per_second")
    values = {k: _number(results.get(k)) for k in keys}
    for split in ("valid", "test"):
        for key, value in results.get(split, {}).items():
            values[f"{split}/{key}"] = _number(value)
    if values["train_seconds"] is not None and values["epochs_run"]:
        values["seconds_per_epoch"] = values["train_seconds"] / values["epochs_run"]
    return values


def _method(results: dict) -> str:
    """The run's method, with γ for BN-VAE."""
    method, model = results.get("method", "?"), results.get("config", {}).get("model")
    gamma = (model or {}).get("gamma")
    return f"{method} (γ={gamma})" if method == "bn_vae" and gamma else method


def _stat(key: str, decimals: int):
    return lambda row: format_stat(row["stats"].get(key), decimals, row["n"])


def _time(key: str):
    return lambda row: format_duration(row["stats"].get(key))


def _ratio(row: dict, key: str, base: dict) -> str:
    """``key``'s mean in ``row`` over its mean in ``base`` (the baseline's stats)."""
    stat, ref = row["stats"].get(key), base.get(key)
    ok = stat and ref and ref["mean"] > 0
    return f"{stat['mean'] / ref['mean']:.2f}" if ok else MISSING


def tables(
    paths: Sequence[str], splits: Sequence[str], baseline: str | None = None
) -> tuple[str, dict]:
    """The Markdown text and the JSON data of Tables 1/8 and 2 of ``paths``.

    Rows come in the order of the sweeps' ``sweep.json``, then as found.
    """
    runs = [run for path in paths for run in find_runs(path)]
    manifests = [pathlib.Path(p, "sweep.json") for p in paths]
    manifests = [load(m) for m in manifests if m.is_file()]
    names = [e["name"] for m in manifests for e in m["entries"]]
    rows = {name: [] for name in names + [row for row, _, _ in runs]}
    for row, _, results in runs:
        rows[row].append((_seed(results), results, _values(results)))
    if baseline is not None and baseline not in rows:
        raise UserError(f"--baseline={baseline}: no such row")
    base = baseline or ("vae" if "vae" in rows else next(iter(rows)))
    rows = [
        {
            "row": row,
            "n": len(members),
            "seeds": sorted(s for s, _, _ in members if s is not None),
            "method": _method(members[0][1]) if members else MISSING,
            "devices": sorted({r.get("num_devices") for _, r, _ in members} - {None}),
            "stats": {
                k: summarize(v.get(k) for _, _, v in members)
                for k in dict.fromkeys(k for _, _, v in members for k in v)
            },
        }
        for row, members in rows.items()
    ]
    b = next(r["stats"] for r in rows if r["row"] == base)

    def table(title: str, columns) -> str:
        header = ["row", "runs", *(name for name, _ in columns)]
        body = ([r["row"], str(r["n"]), *(f(r) for _, f in columns)] for r in rows)
        lines = [header, ["---"] * len(header), *body]
        return f"## {title}\n\n" + "\n".join(f"| {' | '.join(c)} |" for c in lines)

    parts = [
        table(
            f"Table 1/8 ({split}; mean ± sample std over runs)",
            [("method", lambda r: r["method"])]
            + [(title, _stat(f"{split}/{key}", d)) for key, title, d in METRICS],
        )
        for split in splits
    ]
    parts.append(
        table(
            f"Table 2 (training; ratios to {base})",
            [
                ("train time", _time("train_seconds")),
                ("epochs", _stat("epochs_run", 1)),
                ("per epoch", _time("seconds_per_epoch")),
                (f"× {base}", lambda r: _ratio(r, "train_seconds", b)),
                (f"× {base} per epoch", lambda r: _ratio(r, "seconds_per_epoch", b)),
                ("tokens/s", _stat("train_tokens_per_second", 0)),
                ("devices", lambda r: ",".join(map(str, r["devices"])) or MISSING),
            ],
        )
    )
    done = {run for _, run, _ in runs}
    missing = [r for m in manifests for r in m["runs"] if r["name"] not in done]
    unfinished = [f"{r['name']} ({r['status']})" for r in missing]
    if unfinished:
        parts.append("Not finished: " + ", ".join(unfinished))
    data = {"paths": list(paths), "baseline": base, "rows": rows}
    return "\n\n".join(parts) + "\n", data | {"unfinished": unfinished}


def main(argv):
    F, paths = flags.FLAGS, argv[1:]
    with cli.user_errors():
        if not paths:
            raise UserError("give run or sweep directories")
        text, data = tables(paths, F.split or ("valid", "test"), F.baseline)
        sweep = len(paths) == 1 and not pathlib.Path(paths[0], "results.json").exists()
        out = F.out or (paths[0] if sweep and pathlib.Path(paths[0]).is_dir() else None)
        if out is not None:
            fileio.write_text_atomic(pathlib.Path(out, "tables.md"), text)
            fileio.write_json_atomic(pathlib.Path(out, "tables.json"), data)
            text += f"\nwritten: {out}/tables.md, {out}/tables.json\n"
    with fileio.quiet_broken_pipe():
        print(text, end="")


if __name__ == "__main__":
    flags.DEFINE_multi_enum("split", None, ["valid", "test"], "Split (default both).")
    flags.DEFINE_string("baseline", None, "Row of the time ratios (default vae).")
    flags.DEFINE_string("out", None, "Directory for tables.md and tables.json.")
    app.run(main, flags_parser=cli.make_flags_parser(None))
