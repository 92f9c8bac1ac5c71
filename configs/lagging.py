"""Synthetic lagging study (paper App. A.1, Figs. 1-2): VAE vs BN-VAE, scalar latent.

python -m bnvae_jax.lagging --config=configs/lagging.py --workdir=runs/lagging

Trains 9 settings ({VAE, BN-VAE γ=0.5, BN-VAE γ=1} x batch {16, 32, 64}) on the
corpus of configs/synthetic.py (20k sentences, V=1000, E=H=50, n=1, KL weight 1
from the start as in He et al.'s toy.py) and snapshots 500 training sentences at
the steps below. BN-VAE with γ=0 is refused by the config validation (its KL
bound n γ²/2 vanishes and μ would be the constant β), so the plain VAE is the
collapsed γ=0 row. Expected: VAE points spread along x while y collapses to 0;
BN-VAE points spread along the diagonal. Several hours on a 2-core CPU (the
reduced run of launch/lagging.sh takes about 20 minutes).
"""

import pathlib

import ml_collections

from bnvae_jax import cli


def get_config():
    base = cli.load_config_file(str(pathlib.Path(__file__).with_name("synthetic.py")))
    base.data.synthetic.num_valid = 2000  # validation is logged, not studied
    base.data.synthetic.num_test = 2000
    base.train.test_every_epochs = 0
    base.train.checkpoint_every_steps = 2000
    # [BN]'s Gaussian encoder keeps PyTorch's default init, as
    # configs/synthetic.py does. He et al.'s U(±0.1)/U(±0.01) init starts the
    # pre-BN means with a variance far below the BN eps (1e-5): the normalised
    # mean then has variance γ² v/(v + eps) ≈ 0, and the KL's pull keeps v there,
    # so BN-VAE collapses like the VAE (measured: train KL 0.003-0.02 for γ=1 over
    # 8000 steps). model.bn_remedy='relative_eps' keeps the bound at any v.
    base.model.enc_init = "torch_default"

    c = ml_collections.ConfigDict()
    c.base = base  # the training config of every setting (method, γ, batch set below)
    c.study = s = ml_collections.ConfigDict()
    s.models = ("vae", "bn_vae:0.5", "bn_vae:1.0")  # METHOD or METHOD:GAMMA
    s.batch_sizes = (16, 32, 64)
    # Training steps of the snapshots; the last ends training (50 epochs at b=32).
    s.snapshot_steps = (0, 200, 1000, 4000, 12000, 31250)
    s.num_points = 500  # training sentences drawn once (toy.py: num_plot=500)
    s.grid_start = -20.0  # model posterior on arange(start, stop, step) (toy.py)
    s.grid_stop = 20.0
    s.grid_step = 0.1
    s.sentence_chunk = 50  # sentences decoded together
    s.grid_chunk = 20  # grid points decoded together per sentence
    s.seed = 0  # which sentences; MI samples
    s.fig1_models = ("vae", "bn_vae:1.0")  # rows of Fig. 1 (γ = 1 as in the paper)
    s.fig1_batch_size = 32
    s.axis_limit = 3.0  # both axes of every panel span [-limit, limit]
    return c
