"""Markdown table of finished runs: ``python -m bnvae_jax.report RUN ...``.

One row per run, named by its directory (two runs of one method and γ stay
apart), with the method, the split's headline metrics, time and throughput.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

from bnvae_jax import fileio
from bnvae_jax.errors import UserError

COLUMNS = (
    ("iw_nll", "NLL (IW)", "{:.2f}"),
    ("iw_ppl", "PPL (IW)", "{:.2f}"),
    ("elbo_nll", "-ELBO", "{:.2f}"),
    ("rec", "rec", "{:.2f}"),
    ("kl", "KL", "{:.2f}"),
    ("mi", "MI", "{:.2f}"),
    ("au", "AU", "{}"),
)


def load(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (has the run finished?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    if not isinstance(results, dict):
        raise UserError(f"{path}: not a results file (no JSON object)")
    results.setdefault("run", _run_name(path))
    return results


def _run_name(results_file: pathlib.Path) -> str:
    """The run's directory as given (``results.json`` dropped)."""
    return str(
        results_file.parent if results_file.name == "results.json" else results_file
    )


def _label(results: dict) -> str:
    method = results.get("method", "?")
    config = results.get("config") or {}
    gamma = (config.get("model") or {}).get("gamma")
    return f"{method} (γ={gamma})" if method == "bn_vae" and gamma else method


def markdown_table(results: Sequence[dict], split: str = "test") -> str:
    """One row per run: the split's headline metrics, time and throughput."""
    header = (
        ["run", "method"] + [c[1] for c in COLUMNS] + ["train s", "tokens/s", "epochs"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        values = r.get(split, {})
        cells = [str(r.get("run", "–")), _label(r)]
        for key, _, fmt in COLUMNS:
            value = values.get(key)
            cells.append("–" if value is None else fmt.format(value))
        cells += [
            f"{r.get('train_seconds', float('nan')):.0f}",
            f"{r.get('train_tokens_per_second', float('nan')):.0f}",
            str(r.get("epochs_run", "–")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnvae_jax.report",
        description="Markdown tables (valid and test) of finished runs.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directory or its results.json"
    )
    parser.add_argument(
        "--split",
        choices=("valid", "test"),
        action="append",
        help="only this split (repeat for both; default both)",
    )
    args = parser.parse_args(argv)
    try:
        results = [load(p) for p in args.runs]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with fileio.quiet_broken_pipe():
        for split in args.split or ("valid", "test"):
            print(f"\n{split}:\n")
            print(markdown_table(results, split))
    return 0
