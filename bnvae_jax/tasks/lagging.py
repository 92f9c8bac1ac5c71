"""The synthetic lagging study (BN-VAE App. A.1, Figs. 1-2; He et al. 2019, Fig. 1).

``run_study`` (command line: ``python -m bnvae_jax.lagging``) trains every
setting (a method with its γ, times a batch size) with a scalar latent on the
embedded synthetic corpus and, at the configured training steps, compares for a
fixed sample of training sentences the model-posterior mean ``mu_{x,theta}``
(``grid.grid_posterior``) with the inference mean ``mu_{x,phi}``.

Snapshots are taken by training in stages: the loop runs with ``train.max_steps``
raised to each snapshot step in turn, on the run's own workdir, so a killed study
resumes from its checkpoints and the training is the one ``bnvae_jax.main`` does.
One difference from an uninterrupted run: the first stop inside epoch 0 validates
once (and applies the epoch's rule without advancing the epoch) because no
checkpoint is selected yet; that extra validation only sets the plateau rule's
reference loss earlier.

Outputs in the workdir: one run directory per setting (with ``metrics.jsonl``,
checkpoints and ``lagging/step_<N>.npz`` per snapshot), ``lagging_points.npz``
(every setting's points), ``lagging_summary.json`` (per snapshot: mean |mu_theta −
mu_phi|, spreads, correlation, KL and MI over the points) and the figures
``lagging_fig1.png`` (rows ``study.fig1_models`` at ``study.fig1_batch_size``)
and ``lagging_fig2.png`` (every setting). They can be redrawn from the
saved snapshots (``plot_only``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pathlib

import jax
import ml_collections
import numpy as np

from bnvae_jax import fileio, methods
from bnvae_jax.analysis import grid as grid_lib
from bnvae_jax.analysis import plots
from bnvae_jax.errors import ConfigError, WorkdirError
from bnvae_jax.evaluation import estimators
from bnvae_jax.tasks import text_vae
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import steps

SNAPSHOT_DIR = "lagging"
POINTS_FILE = "lagging_points.npz"
SUMMARY_FILE = "lagging_summary.json"
FIG1_FILE = "lagging_fig1.png"
FIG2_FILE = "lagging_fig2.png"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One trained model of the study: a method, its γ (BN-VAE) and a batch size."""

    method: str
    gamma: float | None
    batch_size: int

    @property
    def name(self) -> str:
        """Directory name, e.g. ``bn_vae_g0.5_b32``."""
        gamma = "" if self.gamma is None else f"_g{self.gamma:g}"
        return f"{self.method}{gamma}_b{self.batch_size}"

    @property
    def label(self) -> str:
        """Row label of the figures, e.g. ``BN-VAE γ=0.5, b=32``."""
        method = {"vae": "VAE", "bn_vae": "BN-VAE"}.get(self.method, self.method)
        gamma = "" if self.gamma is None else f" γ={self.gamma:g}"
        return f"{method}{gamma}, b={self.batch_size}"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The ``study`` section of the config, typed and checked."""

    settings: tuple[Setting, ...]
    snapshot_steps: tuple[int, ...]
    num_points: int
    grid: grid_lib.Grid
    sentence_chunk: int
    grid_chunk: int
    seed: int
    fig1: tuple[Setting, ...]  # the rows of figure 1, in study.fig1_models' order
    axis_limit: float


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The study's measurements of one setting at one training step.

    Attributes:
      step: the training step the model had (≤ the requested one when training
        ended earlier).
      mu_theta: <float64>[P] model-posterior means on the grid.
      std_theta: <float64>[P] model-posterior standard deviations.
      mu_phi: <float64>[P] inference means (after the BN head for BN-VAE).
      logvar_phi: <float64>[P] inference log-variances.
      kl: mean KL(q(z|x) || p(z)) over the points.
      mi: I_q(x; z) over the points (dataset-level estimator).
    """

    step: int
    mu_theta: np.ndarray
    std_theta: np.ndarray
    mu_phi: np.ndarray
    logvar_phi: np.ndarray
    kl: float
    mi: float

    def summary(self) -> dict:
        """Scalars of the scatter plot: the gap to the diagonal and the spreads."""
        theta, phi = self.mu_theta, self.mu_phi
        spread_theta, spread_phi = float(np.std(theta)), float(np.std(phi))
        corr = np.corrcoef(theta, phi)[0, 1] if min(spread_theta, spread_phi) > 0 else 0
        return {
            "step": self.step,
            "mean_abs_gap": float(np.mean(np.abs(theta - phi))),
            "spread_mu_theta": spread_theta,
            "spread_mu_phi": spread_phi,
            "corr": float(corr),
            "kl": self.kl,
            "mi": self.mi,
        }


def parse_model(spec: str) -> tuple[str, float | None]:
    """``"vae"`` -> ("vae", None); ``"bn_vae:0.5"`` -> ("bn_vae", 0.5).

    Raises:
      ConfigError: unknown method or a γ that is not a number.
    """
    method, _, gamma = spec.partition(":")
    methods.get_method(method)
    if not gamma:
        return method, None
    try:
        return method, float(gamma)
    except ValueError:
        raise ConfigError(
            f"study.models entry {spec!r}: {gamma!r} is not a number (METHOD:GAMMA)"
        ) from None


def resolve_study(study: ml_collections.ConfigDict) -> StudyConfig:
    """The typed study settings; every mistake is one ``ConfigError`` line."""
    models = [parse_model(m) for m in study.models]
    if not models or not study.batch_sizes:
        raise ConfigError("study.models and study.batch_sizes must not be empty")
    wanted = tuple(int(s) for s in study.snapshot_steps)
    if not wanted or list(wanted) != sorted(set(wanted)) or wanted[0] < 0:
        raise ConfigError(
            f"study.snapshot_steps must be distinct, increasing and >= 0, got {wanted}"
        )
    if study.num_points < 2:
        raise ConfigError(f"study.num_points must be >= 2, got {study.num_points}")
    if study.sentence_chunk < 1 or study.grid_chunk < 1:
        raise ConfigError("study.sentence_chunk and study.grid_chunk must be >= 1")
    if study.axis_limit <= 0:
        raise ConfigError(f"study.axis_limit must be > 0, got {study.axis_limit}")
    fig1 = [parse_model(m) for m in study.fig1_models]
    unknown = set(fig1) - set(models)
    if unknown or study.fig1_batch_size not in study.batch_sizes:
        raise ConfigError(
            f"study.fig1_models {sorted(unknown)} / fig1_batch_size "
            f"{study.fig1_batch_size} are not among study.models / study.batch_sizes"
        )
    scalars = ("num_points", "sentence_chunk", "grid_chunk", "seed", "axis_limit")
    return StudyConfig(
        settings=tuple(Setting(*m, int(b)) for b in study.batch_sizes for m in models),
        snapshot_steps=wanted,
        grid=grid_lib.Grid(study.grid_start, study.grid_stop, study.grid_step),
        fig1=tuple(Setting(*m, int(study.fig1_batch_size)) for m in fig1),
        **{name: study[name] for name in scalars},
    )


def setting_config(
    base: ml_collections.ConfigDict, setting: Setting
) -> ml_collections.ConfigDict:
    """The training config of one setting: ``base`` with its method, γ and batch."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.method = setting.method
    if setting.gamma is not None:
        config.model.gamma = setting.gamma
    config.data.batch_size = setting.batch_size
    if config.model.latent_dim != 1:
        raise ConfigError(
            f"the lagging study needs a scalar latent (base.model.latent_dim=1), "
            f"got {config.model.latent_dim}"
        )
    return config


def choose_points(num_train: int, num_points: int, seed: int) -> np.ndarray:
    """<int64>[P] sorted training-sentence ids, drawn once without replacement."""
    if num_points > num_train:
        raise ConfigError(
            f"study.num_points={num_points} exceeds the {num_train} training sentences"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6]))
    return np.sort(rng.choice(num_train, size=num_points, replace=False))


def take_snapshot(
    model, variables, rows, study: StudyConfig, key: jax.Array, step: int
) -> Snapshot:
    """Both posterior means of ``rows`` under ``variables`` (eval mode)."""
    grid = study.grid.points()
    chunks = dict(sentence_chunk=study.sentence_chunk, grid_chunk=study.grid_chunk)
    log_lik = grid_lib.log_likelihood_grid(model, variables, rows, grid, **chunks)
    posterior = grid_lib.grid_posterior(log_lik, grid)
    mu, logvar = grid_lib.inference_posterior(
        model, variables, rows, sentence_chunk=study.sentence_chunk
    )
    kl = 0.5 * np.sum(np.square(mu) + np.exp(logvar) - logvar - 1.0, axis=-1)
    mi = estimators.mutual_information_dataset(mu, logvar, key)
    return Snapshot(
        step=int(step),
        mu_theta=posterior.mean,
        std_theta=posterior.std,
        mu_phi=mu[:, 0],
        logvar_phi=logvar[:, 0],
        kl=float(np.mean(kl)),
        mi=float(mi),
    )


def _write_npz(path: pathlib.Path, **arrays) -> None:
    """Writes ``arrays`` to ``path`` atomically (compressed ``.npz``)."""
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    fileio.write_text_atomic(path, npz.getvalue())


def load_snapshot(path: pathlib.Path) -> Snapshot:
    with np.load(path) as data:
        values = {f.name: data[f.name] for f in dataclasses.fields(Snapshot)}
    # step, kl and mi as Python numbers, the point arrays as arrays.
    return Snapshot(**{k: v.item() if v.ndim == 0 else v for k, v in values.items()})


def run_setting(
    base: ml_collections.ConfigDict,
    setting: Setting,
    study: StudyConfig,
    run_dir: pathlib.Path,
    plot_only: bool = False,
) -> list[Snapshot]:
    """The setting's snapshots at every study step, read from ``run_dir``.

    The missing ones are taken first, training the setting in stages (or,
    ``plot_only``, a ``WorkdirError``); a setting with every snapshot is not
    set up at all.
    """
    paths = {r: run_dir / SNAPSHOT_DIR / f"step_{r}.npz" for r in study.snapshot_steps}
    missing = [r for r, path in paths.items() if not path.is_file()]
    if missing and plot_only:
        raise WorkdirError(
            f"--plot_only: {paths[missing[0]]} is missing; run the study"
        )
    if missing:
        s, state = text_vae.setup(setting_config(base, setting), str(run_dir))
        state, loop = text_vae.start(s, state)
        fns = loop_lib.task_fns(text_vae, s)
        indices = choose_points(len(s.data.train), study.num_points, study.seed)
        rows = [s.data.train[i] for i in indices]
        with s.ctx.writer, s.ctx.ckpt:
            for requested in missing:
                if int(state.step) < requested and not loop.done:
                    # Train on until ``requested`` (or until the run's own end).
                    settings = dataclasses.replace(s.ctx.settings, max_steps=requested)
                    ctx = dataclasses.replace(s.ctx, settings=settings)
                    state = loop_lib.train_epochs(ctx, state, loop, **fns)
                step = int(state.step)
                if step > requested:
                    raise WorkdirError(
                        f"{run_dir} is at step {step} but has no snapshot for "
                        f"step {requested}; use a new --workdir"
                    )
                key = jax.random.fold_in(jax.random.key(study.seed), requested)
                variables = steps.variables(state)
                snap = take_snapshot(s.model, variables, rows, study, key, step)
                _write_npz(
                    paths[requested], indices=indices, **dataclasses.asdict(snap)
                )
                logging.info("%s step %d: %s", setting.name, step, snap.summary())
    return [load_snapshot(path) for path in paths.values()]


def write_outputs(
    workdir: pathlib.Path, study: StudyConfig, results: dict[str, list[Snapshot]]
) -> dict:
    """The combined points, the summary and both figures; returns the summary."""
    arrays = {}
    for name, snaps in results.items():
        for field in ("step", "mu_theta", "std_theta", "mu_phi", "logvar_phi"):
            arrays[f"{name}/{field}"] = np.stack([getattr(s, field) for s in snaps])
    _write_npz(workdir / POINTS_FILE, **arrays)
    summary = {
        name: [
            dict(s.summary(), requested=r) for s, r in zip(snaps, study.snapshot_steps)
        ]
        for name, snaps in results.items()
    }
    fileio.write_json_atomic(workdir / SUMMARY_FILE, summary)
    for file, settings in ((FIG1_FILE, study.fig1), (FIG2_FILE, study.settings)):
        rows = [
            (s.label, [(x.step, x.mu_theta, x.mu_phi) for x in results[s.name]])
            for s in settings
        ]
        plots.lagging_figure(rows, workdir / file, study.axis_limit)
    return summary


def run_study(
    config: ml_collections.ConfigDict, workdir: str, *, plot_only: bool = False
) -> dict:
    """Trains (or resumes) every setting, then writes points, summary and figures.

    Args:
      config: with sections ``base`` (a training config) and ``study``.
      workdir: the study's directory; each setting trains in a subdirectory.
      plot_only: only read the saved snapshots (all must exist).

    Returns:
      the summary: per setting, one dict of scalars per snapshot.
    """
    study = resolve_study(config.study)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {
        setting.name: run_setting(
            config.base, setting, study, workdir / setting.name, plot_only
        )
        for setting in study.settings
    }
    return write_outputs(workdir, study, results)


def format_summary(summary: dict) -> str:
    """One line per setting and snapshot: step, gap, spreads, KL, MI."""
    lines = ["setting  step  |mu_theta-mu_phi|  sd(mu_theta)  sd(mu_phi)  KL  MI"]
    keys = ("mean_abs_gap", "spread_mu_theta", "spread_mu_phi", "kl", "mi")
    for name, snaps in summary.items():
        for s in snaps:
            cells = [f"{s[key]:.3f}" for key in keys]
            lines.append("  ".join([name, str(s["step"]), *cells]))
    return "\n".join(lines)
