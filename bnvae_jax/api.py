"""The Python API: load a trained model, use it, export it.

``load(path)`` reads a run's workdir (its best checkpoint by default) or a folder
written by ``save`` and returns a ``TextModel`` (text VAEs, every method) or a
``DialogModel`` (dialog CVAEs). Both take raw strings, tokenised as the run read
its corpus, and batch, pad and compile for you (once per length bucket).

Export format (``save``; ``FORMAT_VERSION`` 1), one folder::

    model.json      manifest: format, version, task, method, checkpoint step,
                    source, topics (dialog), test metrics, and the SHA-256 of
                    every file below (``load`` verifies them)
    config.json     the run's config (``ml_collections`` JSON)
    vocab.txt       one word per line; a word's id is its line index
    variables.npz   numpy arrays named by their path in the variable tree,
                    e.g. ``params/encoder/embed/embedding`` and the BN head's
                    running statistics ``batch_stats/head/bn/{mean,var}``
    README.md       a short model card
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import pathlib
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from bnvae_jax import config as config_lib
from bnvae_jax import fileio
from bnvae_jax.data import corpus
from bnvae_jax.data.vocab import EOS, UNK, Vocab
from bnvae_jax.errors import WorkdirError
from bnvae_jax.evaluation import bn_stats, decoding, passes
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models.vae import TextVAE

FORMAT = "bnvae_jax.export"
FORMAT_VERSION = 1
MANIFEST = "model.json"
FILES = ("config.json", "vocab.txt", "variables.npz", "README.md")
STRATEGIES = ("greedy", "sample", "beam")


class LoadError(WorkdirError):
    """``load`` cannot read the path: the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per-sentence scores (nats; one entry per input text, in input order).

    Attributes:
      iw_nll: importance-weighted estimate of −log p(x) (``iw_samples`` samples).
      elbo_nll: −ELBO = rec + kl, from one posterior sample.
      rec: −log p(x|z) of that sample.
      kl: KL(q(z|x) ‖ p(z)).
      tokens: predicted tokens (words + ``</s>``), for perplexities.
      oov: words not in the vocabulary, scored as ``<unk>``.
      iw_samples: importance samples per sentence.
    """

    iw_nll: np.ndarray
    elbo_nll: np.ndarray
    rec: np.ndarray
    kl: np.ndarray
    tokens: np.ndarray
    oov: np.ndarray
    iw_samples: int


# -- checks of user input -------------------------------------------------------


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _decode_settings(strategy, allowed, temperature, max_len, config):
    """Checked strategy, temperature (> 0) and ``max_len`` (default: the run's)."""
    if strategy not in allowed:
        raise ValueError(f"strategy={strategy!r} is not one of {', '.join(allowed)}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    limit = config.eval.max_decode_len if max_len is None else max_len
    return float(temperature), _positive_int(limit, "max_len")


def _warn_unknown(words: str, unknown, hint: str = "", stacklevel: int = 3) -> None:
    """Warns that ``words`` (a count) are read as ``<unk>``, naming up to five."""
    shown = ", ".join(repr(w) for w in dict.fromkeys(unknown[:5]))
    warnings.warn(
        f"{words} are not in the vocabulary and are read as <unk>: {shown}{hint}",
        stacklevel=stacklevel,
    )


def _seed(seed) -> int | None:
    return seed if seed is None else _positive_int(seed, "seed", minimum=0)


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the models ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Model:
    """What both models hold: the Flax module, its variables and the run's data."""

    module: object
    variables: dict
    vocab: Vocab
    config: ml_collections.FrozenConfigDict
    info: dict  # the manifest: task, method, step, results, topics, source
    run: object = None  # the typed RunConfig (DialogRunConfig for dialogs)

    def save(self, directory) -> pathlib.Path:
        """Writes the model as a self-contained folder (see the module docstring).

        Args:
          directory: a folder that does not exist yet or is empty.

        Returns:
          The folder; ``load(folder)`` gives back this model.

        Raises:
          FileExistsError: the folder holds files.
        """
        out = pathlib.Path(directory)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out}: exists and is not an empty folder")
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_text_atomic(out / "config.json", self.config.to_json(indent=2))
        self.vocab.save(out / "vocab.txt")
        flat = traverse_util.flatten_dict(jax.device_get(self.variables), sep="/")
        np.savez(out / "variables.npz", **{k: np.asarray(v) for k, v in flat.items()})
        fileio.write_text_atomic(out / "README.md", _model_card(self))
        digests = {name: _sha256(out / name) for name in FILES}
        manifest = {**self.info, "format": FORMAT, "version": FORMAT_VERSION}
        # Written last: marks the folder complete.
        fileio.write_json_atomic(out / MANIFEST, {**manifest, "sha256": digests})
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class TextModel(_Model):
    """A trained text VAE (any method: BN-VAE, VAE, vMF, SA-VAE, …).

    Attributes:
      module: the Flax ``TextVAE``; ``module.apply(variables, **arrays,
        train=False, method="encode")`` with ``arrays = model.arrays(texts)``.
      variables: ``{'params', 'batch_stats'}``.
      vocab: the run's vocabulary.
      config: the run's config (frozen).
      info: the manifest (method, step, test results, source).
    """

    # -- text -> arrays --------------------------------------------------------

    def _rows(self, texts) -> tuple[list[np.ndarray], np.ndarray]:
        """Id rows ``<s> w.. </s>`` as the run read its corpus, and OOV counts.

        ``texts``: one string (one text) or a non-empty list of strings.
        """
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, Sequence) or isinstance(texts, bytes):
            raise TypeError(f"expected a list of strings, got {type(texts).__name__}")
        if not texts:
            raise ValueError("expected at least one text, got an empty list")
        limit, rows, oov, unknown = int(self.run.data.max_tokens), [], [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a string")
            words = text.split()
            if not words:
                raise ValueError(f"text {i} has no word: {text!r}")
            if len(words) > limit:
                raise ValueError(
                    f"text {i} has {len(words)} words; the run read at most "
                    f"data.max_tokens={limit}"
                )
            (row,) = corpus.encode_corpus([words], self.vocab)
            if (row[1:-1] <= EOS).any():  # <pad>, <s> or </s> among the words
                raise ValueError(
                    f"text {i} contains one of <pad>, <s>, </s>: give the words "
                    "only (<s> and </s> are added)"
                )
            missing = [w for w, t in zip(words, row[1:-1]) if t == UNK and w != "<unk>"]
            rows.append(row)
            oov.append(len(missing))
            unknown += missing
        if unknown:
            total = sum(len(r) - 2 for r in rows)
            hint = ""
            if any(w != w.lower() and self.vocab.id(w.lower()) != UNK for w in unknown):
                hint = " (the vocabulary is lower-case: lower-case the input)"
            _warn_unknown(
                f"{len(unknown)} of {total} words", unknown, hint, stacklevel=4
            )
        return rows, np.asarray(oov)

    def arrays(self, texts) -> dict[str, np.ndarray]:
        """``texts`` as the arrays ``module.apply`` takes, padded to one batch.

        Returns:
          tokens <int32>[N, T] (``<s> w.. </s>``, ``<pad>``), lengths <int32>[N],
          mask <float32>[N].
        """
        rows, _ = self._rows(texts)
        tokens, lengths = decoding.pad_rows(rows)
        mask = np.ones(len(rows), np.float32)
        return {"tokens": tokens, "lengths": lengths, "mask": mask}

    def _sizes(self) -> dict[str, int]:
        """The run's evaluation batch size and bucket width."""
        data = self.run.data
        return {"batch_size": data.eval_batch_size, "bucket_width": data.bucket_width}

    def _key(self, seed) -> jax.Array:
        """The run's evaluation key, or ``key(seed)``."""
        if _seed(seed) is None:
            return eval_run.root_key(self.run.eval, self.run.seed)
        return jax.random.key(seed)

    # -- the latent ------------------------------------------------------------

    def encode(self, texts, sample: bool = False, seed: int | None = None):
        """Latent codes of ``texts``.

        Args:
          texts: a string or a list of strings.
          sample: draw z ~ q(z|x) instead of taking the posterior's location.
          seed: randomness of samples (and of SA-VAE's refinement); None: the
            run's evaluation seed. Sentence i draws from its own key, so a
            text's code does not depend on the others.

        Returns:
          <float32>[N, latent_dim]: posterior means after the head in
          evaluation mode (BN running statistics), the mean direction for vMF,
          the refined posterior for SA-VAE; or samples.
        """
        rows, _ = self._rows(texts)
        # The evaluation batches, as the evaluate command makes them.
        plan = eval_run.plan_batches(rows, **self._sizes())
        key, batches = self._key(seed), list(eval_run.iterate_arrays(plan))
        # Every batch is dispatched before any result is read, so the device
        # works through them while the host waits once.
        options = {"model": self.module, "sample": bool(sample)}
        codes = [
            passes.posterior_codes(self.variables, key, **b, **options) for b in batches
        ]
        index = np.concatenate([batch["index"] for batch in batches])
        z, real = np.concatenate([np.asarray(c) for c in codes]), index >= 0
        return z[real][np.argsort(index[real])]

    def decode(
        self,
        z,
        strategy: str = "greedy",
        seed: int | None = None,
        beam_size: int = 5,
        temperature: float = 1.0,
        max_len: int | None = None,
    ) -> list[str]:
        """Sentences from latent codes.

        Args:
          z: <float>[N, latent_dim] codes.
          strategy: 'greedy' (argmax), 'sample' (from softmax(logits /
            temperature)) or 'beam' (beam search; the best hypothesis by
            log-probability per token, never the empty sentence).
          seed: randomness of 'sample'; None: the run's evaluation seed.
          beam_size: hypotheses kept by 'beam'.
          temperature: > 0; 'sample' only.
          max_len: generated tokens at most (default: the run's
            eval.max_decode_len).

        Returns:
          N sentences (words joined by spaces, without ``<s>``/``</s>``).
        """
        n, z = self.module.cfg.latent_dim, np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != n:
            hint = "; use z[None] for one code" if z.ndim == 1 else ""
            raise ValueError(
                f"z must have shape [num, {n}] (latent_dim={n}), got "
                f"{tuple(z.shape)}{hint}"
            )
        if z.shape[0] == 0:
            raise ValueError("z holds no code")
        if not np.all(np.isfinite(z)):
            raise ValueError("z holds a NaN or infinite value")
        temperature, max_len = _decode_settings(
            strategy, STRATEGIES, temperature, max_len, self.config
        )
        beam_size, key = _positive_int(beam_size, "beam_size"), self._key(seed)
        size, num = int(self.run.data.eval_batch_size), z.shape[0]
        z = np.concatenate([z, np.zeros((-num % size, n), np.float32)])
        mv, pending = (self.module, self.variables), []
        for start in range(0, num, size):  # all dispatched before any is read
            chunk = z[start : start + size]
            if strategy == "beam":
                ids = decoding.beam_search(
                    *mv, chunk, beam_size=beam_size, max_len=max_len, length_norm=True
                ).tokens
            else:  # greedy: no key
                sub = jax.random.fold_in(key, start) if strategy == "sample" else None
                ids = decoding.sample_decode(
                    *mv, chunk, sub, max_len=max_len, temperature=temperature
                )
            pending.append(ids)
        rows = np.concatenate([np.asarray(ids) for ids in pending])[:num]
        return [" ".join(self.vocab.decode(r)) for r in rows]

    def reconstruct(self, texts, **decode_options) -> list[str]:
        """Decodes the posterior locations of ``texts`` (options: ``decode``)."""
        return self.decode(self.encode(texts), **decode_options)

    def sample(self, n: int, seed: int | None = None, **decode_options) -> list[str]:
        """``n`` sentences from z ~ p(z) (N(0, I); uniform on the sphere for vMF).

        ``seed`` draws the codes and the sampled words; None: the run's
        evaluation seed. Other options: ``decode``.
        """
        n = _positive_int(n, "n")
        key = jax.random.fold_in(self._key(seed), 0x5A4D)
        z = self.module.family.prior_sample(key, n, self.module.cfg.latent_dim)
        return self.decode(np.asarray(z), seed=seed, **decode_options)

    def interpolate(self, a: str, b: str, steps: int = 5, **decode_options):
        """``steps`` sentences decoded along the segment between the codes of a, b.

        The ends are the posterior locations of ``a`` and ``b``; for vMF the
        points are projected back onto the sphere. Options: ``decode``.
        """
        steps = _positive_int(steps, "steps", minimum=2)
        if not self.module.cfg.latent_dim:
            raise ValueError(f"method {self.run.method_name} has no latent code")
        ends = self.encode([a, b])
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        z = (1.0 - t) * ends[0] + t * ends[1]
        if self.module.cfg.head == "vmf":
            z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return self.decode(z, **decode_options)

    # -- scores ----------------------------------------------------------------

    def score(self, texts, iw_samples: int = 500, seed: int | None = None) -> Scores:
        """Per-sentence IW-NLL, −ELBO, reconstruction and KL (nats).

        With ``seed=None`` the draws are the evaluate command's for its test
        split: scoring the test sentences in order gives, averaged, exactly
        its test figures at the same ``iw_samples``.
        """
        rows, oov = self._rows(texts)
        n = _positive_int(iw_samples, "iw_samples")
        cfg = dataclasses.replace(self.run.eval, iw_samples=n, iw_max_sentences=0)
        # The test split's keys, as text_vae.evaluate_model derives them.
        elbo_key, iw_key = jax.random.split(jax.random.fold_in(self._key(seed), 1))
        pp, _, (log_px, tokens, samples) = eval_run.sentence_passes(
            *(self.module, self.variables, rows, elbo_key, cfg),
            **self._sizes(),
            iw_key=iw_key,
        )
        return Scores(-log_px, pp.rec + pp.kl, pp.rec, pp.kl, tokens, oov, samples)

    def recompute_bn(self, texts, max_sentences: int = 0) -> TextModel:
        """This model with its BN head's running statistics recomputed ("precise BN").

        The running mean and variance become the population statistics of the
        raw posterior means over ``texts`` (e.g. the training sentences),
        instead of the moving averages training kept. Models without a BN head
        come back unchanged.
        """
        if not bn_stats.has_bn_head(self.variables):
            return self
        rows, _ = self._rows(texts)
        variables = bn_stats.precise_batch_stats(
            *(self.module, self.variables, rows),
            max_sentences=max_sentences,
            **self._sizes(),
        )
        info = {**self.info, "precise_bn": len(rows)}
        return dataclasses.replace(self, variables=variables, info=info)


# -- dialog ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class DialogModel(_Model):
    """A trained dialog CVAE (``cvae``, ``cvae_bow``, ``bn_cvae``).

    Attributes: as ``TextModel``'s; ``topics`` names the topic ids.
    """

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.info["topics"])

    def respond(
        self,
        context_turns,
        n: int = 5,
        seed: int | None = None,
        strategy: str = "greedy",
        temperature: float = 1.0,
        max_len: int | None = None,
        topic: str | None = None,
    ) -> list[str]:
        """``n`` replies to a context, one per latent z ~ p(z | context).

        Args:
          context_turns: the utterances so far, oldest first (speakers take
            turns; the reply is by the speaker of the second-to-last turn).
          n: replies.
          seed: randomness of z (and of sampled words); None: the run's
            evaluation seed.
          strategy: 'greedy' or 'sample' (softmax(logits / temperature)).
          temperature: > 0; 'sample' only.
          max_len: tokens at most (default: the run's eval.max_decode_len).
          topic: one of ``topics`` (default and unknown: the unknown topic).

        Returns:
          n replies (lower-cased words joined by spaces).
        """
        from bnvae_jax.tasks.dialog import data as dialog_data

        if isinstance(context_turns, str):
            raise TypeError("context_turns must be a list of utterances, not a string")
        n = _positive_int(n, "n")
        temperature, max_len = _decode_settings(
            strategy, STRATEGIES[:2], temperature, max_len, self.config
        )
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be a string, got {type(topic).__name__}")
        sizes = {k: getattr(self.run.data, k) for k in ("max_utt_len", "context_size")}
        try:
            read = dialog_data.context_batch(
                [context_turns], self.vocab, self.topics, topic=topic, **sizes
            )
        except ValueError as e:  # its messages count contexts; here there is one
            raise ValueError(str(e).replace("contexts[0]", "context_turns")) from None
        if read.oov:
            _warn_unknown(f"{read.oov} words of the context", read.unknown_words)
        key = jax.random.key(self.run.eval.seed if _seed(seed) is None else seed)
        sampled = None if strategy == "greedy" else temperature
        options = {"num_samples": n, "max_len": max_len, "temperature": sampled}
        ids = _respond_kernel(self.variables, key, read.batch, self.module, **options)
        return [" ".join(self.vocab.decode(r)) for r in np.asarray(ids)[0]]


@functools.partial(
    jax.jit, static_argnames=("module", "num_samples", "max_len", "temperature")
)
def _respond_kernel(variables, key, batch, module, **options):
    return module.apply(
        variables, batch, **options, method="generate", rngs={"sample": key}
    )


# -- loading -----------------------------------------------------------------------


def _read_json(path: pathlib.Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: cannot read {what} ({e})") from None
    if not isinstance(value, dict):
        raise LoadError(f"{path}: {what} is not a JSON object")
    return value


def _read_checkpoint(workdir: pathlib.Path, checkpoint) -> tuple[dict, int]:
    """Variables and training step of a workdir's checkpoint (no orbax manager)."""
    import orbax.checkpoint as ocp  # only workdirs need it

    from bnvae_jax.training.checkpoints import complete_steps

    ckpts = workdir / "checkpoints"
    steps = complete_steps(ckpts)
    if checkpoint == "best":
        found = complete_steps(ckpts / "best")
        if not found:
            raise LoadError(f"{workdir}: the run has no best checkpoint yet")
        folder = ckpts / "best" / str(found[0])
        step = int(_read_json(folder / "info" / "metadata", "checkpoint info")["step"])
    elif not steps:
        raise LoadError(f"{workdir}: the run has no checkpoint yet")
    else:
        step = steps[0] if checkpoint == "latest" else checkpoint
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(
                f"checkpoint={checkpoint!r}: use 'best', 'latest' or a step number"
            )
        if step not in steps:
            raise LoadError(
                f"{workdir}: no checkpoint at step {step}; the run keeps "
                f"steps {', '.join(map(str, sorted(steps)))} and 'best'"
            )
        folder = ckpts / str(step)
    try:
        tree = ocp.StandardCheckpointer().restore((folder / "state").absolute())
    except Exception as e:  # orbax's many error types: one line for the user
        raise LoadError(
            f"{folder}: cannot read the checkpoint ({type(e).__name__})"
        ) from e
    variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
    return jax.tree_util.tree_map(jnp.asarray, variables), step


def _read_export(path: pathlib.Path, checkpoint) -> tuple[dict, Vocab, dict, dict]:
    """(config, vocab, variables, manifest) of a folder written by ``save``."""
    info = _read_json(path / MANIFEST, "the export manifest")
    if info.get("format") != FORMAT or not isinstance(info.get("sha256"), dict):
        raise LoadError(f"{path / MANIFEST}: not a bnvae_jax export manifest")
    if info.get("version") != FORMAT_VERSION:
        raise LoadError(
            f"{path}: export format version {info.get('version')}; this "
            f"bnvae_jax reads version {FORMAT_VERSION}"
        )
    if checkpoint != "best":
        raise ValueError(f"{path} is an export: it holds one checkpoint only")
    for name, digest in info["sha256"].items():
        if not (path / name).is_file():
            raise LoadError(f"{path}: {name} is missing from the export")
        if _sha256(path / name) != digest:
            raise LoadError(
                f"{path / name}: checksum mismatch (the file was changed or "
                "corrupted; export the model again)"
            )
    with np.load(path / "variables.npz", allow_pickle=False) as npz:
        flat = {name: jnp.asarray(npz[name]) for name in npz.files}
    variables = traverse_util.unflatten_dict(flat, sep="/")
    variables.setdefault("batch_stats", {})
    config = _read_json(path / "config.json", "the config")
    return config, Vocab.load(path / "vocab.txt"), variables, info


def _source(path: pathlib.Path, checkpoint) -> tuple[dict, Vocab, dict, dict]:
    """(config, vocab, variables, manifest) of a workdir or an export."""
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise LoadError(
            f"{path}: is a file; give a run's workdir or an exported folder"
        )
    if (path / MANIFEST).is_file():
        return _read_export(path, checkpoint)
    if not (path / "config.json").is_file():
        raise LoadError(
            f"{path}: not a run's workdir or an exported model (no config.json "
            f"or {MANIFEST})"
        )
    config = _read_json(path / "config.json", "the run's config")
    if not (path / "vocab.txt").is_file():
        raise LoadError(f"{path}: the run has no vocab.txt")
    vocab = Vocab.load(path / "vocab.txt")
    variables, step = _read_checkpoint(path, checkpoint)
    info = {
        "task": "dialog" if config.get("task") == "dialog" else "text_vae",
        "method": config.get("method"),
        "step": step,
        "checkpoint": checkpoint,
        "source": str(path.absolute()),
    }
    if info["task"] == "dialog":
        run_info = _read_json(path / "run_info.json", "the run info")
        info["topics"] = list(run_info.get("topics", []))
    if (path / "results.json").is_file() and checkpoint == "best":
        results = _read_json(path / "results.json", "results")
        info["results"] = {s: results[s] for s in ("valid", "test") if s in results}
    return config, vocab, variables, info


def load(path, checkpoint: str | int = "best") -> TextModel | DialogModel:
    """Loads a trained model from a run's workdir or an exported folder.

    Args:
      path: a workdir written by ``python -m bnvae_jax.main`` (or a copy of
        one) or a folder written by ``model.save`` / ``python -m
        bnvae_jax.export``. No data file is read.
      checkpoint: 'best' (the selected state, as evaluated), 'latest' or a
        training step the workdir still keeps.

    Returns:
      A ``TextModel`` for text-VAE runs, a ``DialogModel`` for dialog runs.

    Raises:
      LoadError: the path is missing, a file, not a run or export, a run with
        no checkpoint yet, or an export whose checksum does not match.
    """
    raw, vocab, variables, info = _source(pathlib.Path(path), checkpoint)
    config = ml_collections.ConfigDict(raw)
    if info["task"] == "dialog":
        from bnvae_jax.tasks.dialog import config as dialog_config
        from bnvae_jax.tasks.dialog.model import DialogCVAE

        run = dialog_config.resolve(config, len(vocab), len(info["topics"]))
        module, cls = DialogCVAE(run.model), DialogModel
    else:
        run = config_lib.resolve(config, len(vocab))
        module, cls = TextVAE(run.model), TextModel
    frozen = ml_collections.FrozenConfigDict(config)
    model = cls(module, variables, vocab, frozen, info, run=run)
    bound = bn_stats.promised_bound(module, variables) if cls is TextModel else None
    kl = info.get("results", {}).get("test", {}).get("kl", math.inf)
    if bound is not None and kl < bn_stats.BOUND_FRACTION * bound:
        warnings.warn(
            f"test KL {kl:.3g} < the BN head's bound {bound:.3g}: the running "
            "statistics of this checkpoint lag behind its encoder (an early best "
            "checkpoint?); model.recompute_bn(training_sentences) or "
            "`python -m bnvae_jax.evaluate --precise_bn` recomputes them",
            stacklevel=2,
        )
    return model


def _model_card(model: _Model) -> str:
    info, m, d = model.info, model.config.model, model.config.data
    lines = [f"# {info.get('method')} ({info.get('task')}), bnvae_jax export", ""]
    if info.get("task") == "text_vae":
        bn = bn_stats.has_bn_head(model.variables)
        gamma = f", BN scale gamma {m.gamma}" if bn else ""
        lines.append(
            f"- model: embeddings {m.emb_dim}, encoder {m.enc_hidden}, decoder "
            f"{m.dec_hidden}, latent {m.latent_dim}{gamma}"
        )
    corpus_name = d.get("tfds_name") or d.get("train_file") or d.get("source", "")
    lines += [
        f"- corpus: {corpus_name} (vocabulary {len(model.vocab)} words)",
        f"- checkpoint: {info.get('checkpoint')} (training step {info.get('step')})",
        f"- exported from: {info.get('source')}",
    ]
    if info.get("precise_bn"):
        lines.append(f"- BN statistics recomputed on {info['precise_bn']} sentences")
    test = info.get("results", {}).get("test", {})
    names = ("iw_nll", "iw_ppl", "elbo_nll", "rec", "kl", "mi", "au", "bleu_r")
    shown = {k: test[k] for k in names if isinstance(test.get(k), int | float)}
    if shown:
        lines += ["", "Test metrics of the training run (nats per sentence):", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in shown.items()]
    lines.append(
        "\nLoad with `bnvae_jax.load(this_folder)`; files and checksums: model.json."
    )
    return "\n".join(lines) + "\n"
