"""BN-VAE's LSTM text VAE, its training step and IW-NLL in PyTorch: a yardstick.

``benchmarks/run.py --compare=pytorch`` times this next to the JAX code at the
same sizes and on the same inputs. It is written from the paper's description
(Zhu et al., ACL 2020, Algorithm 1) and ``shared/SPEC.md`` §2–§4, the way the
authors' PyTorch code builds it, and needs the ``bench`` extra (CPU torch):

    pip install -e ".[bench]"

The model, piece by piece (the JAX counterpart in brackets):

* encoder: ``Embedding(V, E)`` -> one-layer ``LSTM(E -> H)`` -> the hidden state
  at the last real token -> ``Linear(H -> 2n, bias=False)`` split into
  (μ_raw, log σ²) [``vae.Encoder``];
* head: μ = ``BatchNorm1d(n)`` of μ_raw with its weight filled with γ and frozen
  (``requires_grad=False``), its bias β learnable from 0, eps 1e-5, momentum 0.1;
  log σ² untouched [``posteriors.BNGaussianHead``];
* z = μ + σ·ε, KL = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1) [``latents.GAUSSIAN``];
* decoder: ``c0 = W_z z`` (no bias), ``h0 = tanh(c0)``; every input is
  [dropout(emb(y_{t−1})); z]; one-layer ``LSTM(E + n -> H)``; dropout on its
  outputs; ``Linear(H -> V, bias=False)``; cross-entropy summed over the L + 1
  targets [``vae.Decoder``, ``TextVAE.reconstruction``];
* step: mean over the batch of rec + w·KL, backward, global-norm clipping at 5,
  plain SGD (momentum 0) [``steps.train_step``, ``steps.make_optimizer``];
* IW-NLL: the reference's ``calc_iwnll``: one sentence at a time, K samples in
  chunks (the encoder runs again for every chunk, in eval mode), log p(x) =
  logsumexp_k(log p(x|z_k) + log p(z_k) − log q(z_k|x)) − log K
  [``passes.iw_log_likelihood``].

Both sides keep PyTorch's LSTM layout and gate order (i, f, g, o); the JAX side
stores kernels input-major (``[in, out]``), PyTorch output-major, so copying
parameters is a transpose (``load_flax_variables`` / ``flax_variables``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class RefConfig:
    """Sizes and the few hyper-parameters the reference model has.

    ``gamma <= 0`` builds the plain VAE (no BN on μ).
    """

    vocab: int
    emb: int
    hidden: int
    latent: int
    gamma: float = 0.6
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dropout_in: float = 0.5
    dropout_out: float = 0.5

    @classmethod
    def from_size(cls, size: dict, **overrides) -> RefConfig:
        """From a ``benchmarks/run.py`` size dict (vocab, emb, hidden, latent)."""
        keys = ("vocab", "emb", "hidden", "latent")
        return cls(**{k: size[k] for k in keys}, **overrides)


def set_threads(num: int | None = None) -> int:
    """Gives torch's intra-op pool ``num`` threads (default: the usable cores).

    XLA's CPU client sizes its pool by the cores this process may run on, so
    the same count keeps the comparison fair.
    """
    if num is None:
        try:
            num = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num = os.cpu_count() or 1
    torch.set_num_threads(num)
    return num


class GaussianLSTMEncoder(nn.Module):
    """Embedding -> LSTM -> state at the last real token -> (μ, log σ²), BN on μ."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.emb)
        self.lstm = nn.LSTM(cfg.emb, cfg.hidden, batch_first=True)
        self.to_latent = nn.Linear(cfg.hidden, 2 * cfg.latent, bias=False)
        self.bn = None
        if cfg.gamma > 0:
            self.bn = nn.BatchNorm1d(
                cfg.latent, eps=cfg.bn_eps, momentum=cfg.bn_momentum
            )
            with torch.no_grad():
                self.bn.weight.fill_(cfg.gamma)
            self.bn.weight.requires_grad_(False)  # γ fixed; β (bias) learnt
        # PyTorch's default initialisation throughout, as the authors' BN-VAE
        # encoder keeps it (SPEC §2.1): embedding N(0, 1), LSTM and linear
        # U(±1/sqrt(fan)).

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """Rows <int64>[B, T] (with <s>, </s>), true lengths [B] -> μ, log σ² [B, n]."""
        hs, _ = self.lstm(self.embed(tokens))
        last = (lengths - 1).clamp(0, tokens.shape[1] - 1)
        h_last = hs[torch.arange(tokens.shape[0]), last]
        mu, logvar = self.to_latent(h_last).chunk(2, dim=-1)
        if self.bn is not None:
            mu = self.bn(mu)
        return mu, logvar


class LSTMDecoder(nn.Module):
    """LSTM decoder: z sets the initial state and is concatenated to every input."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.emb)
        self.init_state = nn.Linear(cfg.latent, cfg.hidden, bias=False)
        self.lstm = nn.LSTM(cfg.emb + cfg.latent, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.drop_in = nn.Dropout(cfg.dropout_in)
        self.drop_out = nn.Dropout(cfg.dropout_out)
        # The reference's decoder: every weight U(±0.01), embedding U(±0.1).
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.uniform_(
                    *((-0.1, 0.1) if name.startswith("embed") else (-0.01, 0.01))
                )

    def forward(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits <float32>[B, T, V] for inputs [B, T] and z [B, n]."""
        x = self.drop_in(self.embed(inputs))
        zs = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        c0 = self.init_state(z)
        h0 = torch.tanh(c0)
        hs, _ = self.lstm(torch.cat([x, zs], dim=-1), (h0[None], c0[None]))
        return self.out(self.drop_out(hs))


class VAEOutput(NamedTuple):
    rec: torch.Tensor  # [B] summed cross-entropy of the L + 1 targets (nats)
    kl: torch.Tensor  # [B, n] KL(q(z|x) || N(0, I)) per dimension
    mu: torch.Tensor  # [B, n] after BN
    logvar: torch.Tensor  # [B, n]
    z: torch.Tensor  # [B, n]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1.0)


class TextVAE(nn.Module):
    """q(z|x) by ``GaussianLSTMEncoder``, p(x|z) by ``LSTMDecoder``."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = GaussianLSTMEncoder(cfg)
        self.decoder = LSTMDecoder(cfg)

    def reconstruction(self, tokens, lengths, z) -> torch.Tensor:
        """−log p(x|z) summed over the L + 1 targets of each row: [B]."""
        logits = self.decoder(tokens[:, :-1], z)
        targets = tokens[:, 1:]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view(targets.shape)
        width = targets.shape[1]
        mask = torch.arange(width, device=tokens.device)[None] < (lengths[:, None] - 1)
        return (nll * mask).sum(dim=1)

    def forward(self, tokens, lengths, eps: torch.Tensor | None = None) -> VAEOutput:
        """One-sample ELBO terms; ``eps`` [B, n] fixes the noise (else N(0, I))."""
        mu, logvar = self.encoder(tokens, lengths)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = self.reconstruction(tokens, lengths, z)
        return VAEOutput(rec, gaussian_kl(mu, logvar), mu, logvar, z)


class StepResult(NamedTuple):
    loss: float
    grad_norm: float
    out: VAEOutput


class Trainer:
    """SGD (momentum 0) after clipping the global gradient norm.

    The authors keep two SGD optimisers (encoder, decoder) with one learning
    rate and clip the norm over all parameters first: the same update as one
    optimiser over every trainable parameter.
    """

    def __init__(self, model: TextVAE, lr: float = 0.5, clip_norm: float = 5.0):
        self.model = model
        self.clip_norm = clip_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.0)

    def step(self, tokens, lengths, kl_weight: float, eps=None) -> StepResult:
        """One training step on a batch (train mode: batch BN statistics, dropout)."""
        self.model.train()
        out = self.model(tokens, lengths, eps)
        loss = (out.rec + kl_weight * out.kl.sum(dim=-1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.optimizer.step()
        return StepResult(float(loss.detach()), float(norm), out)


def gaussian_log_prob(z, mu, logvar) -> torch.Tensor:
    """Log N(z; μ, σ²) summed over the last axis."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def standard_normal_log_prob(z) -> torch.Tensor:
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


@torch.no_grad()
def sentence_log_likelihood(
    model: TextVAE,
    tokens: torch.Tensor,
    num_samples: int = 500,
    chunk: int = 100,
    eps: torch.Tensor | None = None,
) -> float:
    """Importance-weighted log p(x) of one sentence <int64>[1, L + 2] (no padding).

    ``eps`` <float32>[K, n] fixes the samples (else drawn chunk by chunk).
    """
    model.eval()
    length = torch.tensor([tokens.shape[1]])
    log_w = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        mu, logvar = model.encoder(tokens, length)  # [1, n], as calc_iwnll
        e = torch.randn(k, mu.shape[1]) if eps is None else eps[start : start + k]
        z = mu + torch.exp(0.5 * logvar) * e  # [k, n]
        rec = model.reconstruction(tokens.expand(k, -1), length.expand(k), z)
        log_w.append(
            -rec + standard_normal_log_prob(z) - gaussian_log_prob(z, mu, logvar)
        )
    return float(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))


def iw_log_likelihood(
    model: TextVAE,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    num_samples: int = 500,
    chunk: int = 100,
    eps: torch.Tensor | None = None,
) -> np.ndarray:
    """Log p(x) <float64>[N] of rows [N, T], one sentence at a time.

    ``eps`` <float32>[N, K, n] fixes every sentence's samples.
    """
    out = []
    for i in range(tokens.shape[0]):
        row = tokens[i : i + 1, : int(lengths[i])]
        e = None if eps is None else eps[i]
        out.append(sentence_log_likelihood(model, row, num_samples, chunk, e))
    return np.asarray(out, np.float64)


# -- parameters in the JAX model's layout -------------------------------------


def _lstm_pairs(prefix: tuple, lstm: nn.LSTM) -> list:
    # Same gate order (i, f, g, o) on both sides: only the kernels transpose.
    return [
        (prefix + ("w_ih",), lstm.weight_ih_l0, True),
        (prefix + ("w_hh",), lstm.weight_hh_l0, True),
        (prefix + ("b_ih",), lstm.bias_ih_l0, False),
        (prefix + ("b_hh",), lstm.bias_hh_l0, False),
    ]


def variable_pairs(model: TextVAE) -> list:
    """(path in the Flax variables, torch tensor, transposed?) for every tensor."""
    enc, dec = model.encoder, model.decoder
    pairs = [
        (("params", "encoder", "embed", "embedding"), enc.embed.weight, False),
        *_lstm_pairs(("params", "encoder", "lstm"), enc.lstm),
        (("params", "encoder", "to_latent", "kernel"), enc.to_latent.weight, True),
        (("params", "decoder", "embed", "embedding"), dec.embed.weight, False),
        (("params", "decoder", "init_state", "kernel"), dec.init_state.weight, True),
        *_lstm_pairs(("params", "decoder", "lstm"), dec.lstm),
        (("params", "decoder", "out", "kernel"), dec.out.weight, True),
    ]
    if enc.bn is not None:
        pairs += [
            (("params", "head", "bn", "beta"), enc.bn.bias, False),
            (("batch_stats", "head", "bn", "mean"), enc.bn.running_mean, False),
            (("batch_stats", "head", "bn", "var"), enc.bn.running_var, False),
        ]
    return pairs


def load_flax_variables(model: TextVAE, variables) -> None:
    """Copies a ``bnvae_jax`` TextVAE's {'params', 'batch_stats'} into ``model``."""
    with torch.no_grad():
        for path, tensor, transposed in variable_pairs(model):
            value = variables
            for key in path:
                value = value[key]
            value = np.array(value, np.float32)  # a writable copy
            tensor.copy_(torch.from_numpy(value.T.copy() if transposed else value))


def flax_variables(model: TextVAE) -> dict:
    """``model``'s tensors as numpy arrays in the Flax TextVAE's nested layout."""
    out: dict = {}
    for path, tensor, transposed in variable_pairs(model):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        value = tensor.detach().numpy()
        node[path[-1]] = value.T.copy() if transposed else value.copy()
    return out


# -- runners for benchmarks/run.py (each call returns a Python value) ---------


def _batch_tensors(batch: dict):
    tokens = torch.from_numpy(np.asarray(batch["tokens"], np.int64))
    lengths = torch.from_numpy(np.asarray(batch["lengths"], np.int64))
    return tokens, lengths


def train_runner(size: dict, batch: dict, gamma: float = 0.6, seed: int = 0):
    """A closure running one training step (lr 0.5, clip 5) of a fresh model.

    The KL weight anneals linearly from 0 over 1000 steps, as the JAX runner's.
    """
    torch.manual_seed(seed)
    trainer = Trainer(TextVAE(RefConfig.from_size(size, gamma=gamma)), 0.5, 5.0)
    tokens, lengths = _batch_tensors(batch)
    count = {"step": 0}

    def run():
        count["step"] += 1
        return trainer.step(tokens, lengths, min(1.0, count["step"] / 1000.0)).loss

    return run


def iw_runner(size: dict, batch: dict, num_samples: int, chunk: int, seed: int = 0):
    """A closure computing the IW-NLL of every row of ``batch``, one at a time."""
    torch.manual_seed(seed)
    model = TextVAE(RefConfig.from_size(size))
    model.eval()
    tokens, lengths = _batch_tensors(batch)

    def run():
        return float(
            iw_log_likelihood(model, tokens, lengths, num_samples, chunk).sum()
        )

    return run


def gemm_runner(n: int):
    """A closure computing one float32 [n, n] x [n, n] ``torch.mm``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)

    def run():
        torch.mm(a, b)  # CPU ops return when done
        return None

    return run


def versions() -> dict:
    """Torch's version, threads and the CPU kernels ATen dispatches to."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = None
    return {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": capability,
    }
