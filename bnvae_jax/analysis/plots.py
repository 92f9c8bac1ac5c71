"""Figures of the analyses, drawn with matplotlib's object API (no pyplot state).

``lagging_figure``: the scatter grid of BN-VAE Figs. 1-2 (x: model-posterior
mean, y: inference mean, dashed diagonal). ``dynamics_figure``: BN-VAE Fig. 3
(MI, the KL term of the ELBO and KL(q(z) || p(z)) over training).
``curves_figure``: validation −ELBO and KL against the epoch, one line per run.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from bnvae_jax.analysis.curves import Curves

_PANEL_INCHES = 1.55
_DPI = 80


def save_png(fig: Figure, path: str | pathlib.Path, pad: float) -> pathlib.Path:
    """Lays out ``fig`` (padding ``pad``) and writes it to ``path`` as PNG."""
    fig.tight_layout(pad=pad)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def line_panels(count: int, size: tuple[float, float], xlabel: str):
    """``(figure, axes)``: a row of ``count`` gridded panels sharing ``xlabel``."""
    fig = Figure(figsize=size, dpi=90)
    axes = fig.subplots(1, count, squeeze=False)[0]
    for ax in axes:
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig, axes


def lagging_figure(
    rows: Sequence[tuple[str, Sequence[tuple[int, np.ndarray, np.ndarray]]]],
    path: str | pathlib.Path,
    limit: float = 3.0,
) -> pathlib.Path:
    """Writes the scatter grid as PNG: one row per model, one column per snapshot.

    Args:
      rows: ``(label, [(step, mu_theta <float>[P], mu_phi <float>[P]), ...])``;
        every row has the same number of snapshots.
      path: the PNG to write (parent created).
      limit: both axes span ``[-limit, limit]``; points outside are clipped to
        the frame so a diverging posterior stays visible.

    Returns:
      ``path``.
    """
    if not rows or not rows[0][1]:
        raise ValueError("lagging_figure needs at least one row and one snapshot")
    num_cols = len(rows[0][1])
    if any(len(snaps) != num_cols for _, snaps in rows):
        raise ValueError("every row of lagging_figure needs the same snapshot count")
    size = (_PANEL_INCHES * num_cols + 0.6, _PANEL_INCHES * len(rows) + 0.5)
    fig = Figure(figsize=size, dpi=_DPI)
    axes = fig.subplots(len(rows), num_cols, squeeze=False, sharex=True, sharey=True)
    edge = limit * 0.98
    points = dict(s=5, marker="x", c="tab:red", linewidths=0.6, rasterized=True)
    for r, (label, snaps) in enumerate(rows):
        for c, (step, mu_theta, mu_phi) in enumerate(snaps):
            ax = axes[r, c]
            ax.plot([-limit, limit], [-limit, limit], "k--", lw=0.6)
            ax.axhline(0.0, color="0.6", ls="--", lw=0.5)
            ax.axvline(0.0, color="0.6", ls="--", lw=0.5)
            ax.scatter(*np.clip([mu_theta, mu_phi], -edge, edge), **points)
            ax.set(xlim=(-limit, limit), ylim=(-limit, limit))
            ax.tick_params(labelsize=6, length=2)
            ax.set_title(f"step {step}", fontsize=7, pad=2)
        axes[r, 0].set_ylabel(f"{label}\n" + r"$\mu_{x,\phi}$", fontsize=7)
    for c in range(num_cols):
        axes[-1, c].set_xlabel(r"$\mu_{x,\theta}$", fontsize=7)
    return save_png(fig, path, pad=0.3)


def dynamics_figure(
    runs: Sequence[tuple[str, Curves]], path: str | pathlib.Path
) -> pathlib.Path:
    """Writes one panel per run: MI, KL in the ELBO and KL(q(z)||p(z)) per step.

    Args:
      runs: ``(title, curves)`` for each run (without an MI: the KL only).
      path: the PNG to write (parent created).

    Returns:
      ``path``.
    """
    if not runs:
        raise ValueError("dynamics_figure needs at least one run")
    fig, axes = line_panels(len(runs), (3.2 * len(runs), 2.6), "training step")
    for ax, (title, series) in zip(axes, runs, strict=True):
        ax.plot(series.step, series.kl, "-o", ms=2.5, label="KL in the ELBO")
        ax.plot(series.step, series.mi, "-s", ms=2.5, label=r"MI $I_q$")
        ax.plot(
            series.step, series.kl_aggregate, "-^", ms=2.5, label=r"KL$(q(z)\|p(z))$"
        )
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("nats", fontsize=8)
    axes[0].legend(fontsize=7)
    return save_png(fig, path, pad=0.4)


def curves_figure(
    runs: Sequence[tuple[str, Curves]], path: str | pathlib.Path
) -> pathlib.Path:
    """Writes two panels (validation −ELBO, KL) against the epoch as PNG.

    Args:
      runs: ``(label, curves)`` per run, each drawn as one line in both panels.
      path: the PNG to write (parent created).

    Returns:
      ``path``.
    """
    if not runs:
        raise ValueError("curves_figure needs at least one run")
    fig, (ax_elbo, ax_kl) = line_panels(2, (7.4, 2.8), "epoch")
    for label, c in runs:
        ax_elbo.plot(c.epoch + 1, c.elbo_nll, "-o", ms=2.5, label=label)
        ax_kl.plot(c.epoch + 1, c.kl, "-o", ms=2.5, label=label)
    ax_elbo.set_ylabel("validation −ELBO (nats / sentence)", fontsize=8)
    ax_kl.set_ylabel("validation KL (nats)", fontsize=8)
    ax_elbo.legend(fontsize=7)
    return save_png(fig, path, pad=0.4)
