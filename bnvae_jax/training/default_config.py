"""The default run: BN-VAE on the embedded synthetic corpus (minutes on a CPU).

python -m bnvae_jax.main
"""

from bnvae_jax.training import config_lib


def get_config():
    return config_lib.default_config()
