"""Markdown table of finished runs: ``python -m bnvae_jax.report RUN ...``."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence

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
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (has the run finished?)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _label(results: dict) -> str:
    method = results.get("method", "?")
    config = results.get("config") or {}
    gamma = (config.get("model") or {}).get("gamma")
    return f"{method} (γ={gamma})" if method == "bn_vae" and gamma else method


def markdown_table(results: Sequence[dict], split: str = "test") -> str:
    """One row per run: the split's headline metrics, time and throughput."""
    header = ["method"] + [c[1] for c in COLUMNS] + ["train s", "tokens/s", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        values = r.get(split, {})
        cells = [_label(r)]
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
    if not argv:
        print(
            "usage: python -m bnvae_jax.report RUN[/results.json] ...", file=sys.stderr
        )
        return 2
    try:
        results = [load(p) for p in argv]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in ("valid", "test"):
        print(f"\n{split}:\n")
        print(markdown_table(results, split))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
