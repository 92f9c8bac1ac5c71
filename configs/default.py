"""BN-VAE on the embedded synthetic corpus: the run `python -m bnvae_jax.main` does.

    python -m bnvae_jax.main --config=configs/default.py --workdir=runs/default

Expected: a few minutes on 2 CPU cores; KL >= n*gamma^2/2 = 1.44 and AU = n.
"""

from bnvae_jax import config as config_lib


def get_config():
    return config_lib.default_config()
