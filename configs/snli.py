"""SNLI sentences; not in the paper, sizes of [BN]'s config.

    python -m bnvae_jax.main --config=configs/snli.py --workdir=runs/snli \
      --config.data.train_file=snli_data/snli.train.txt \
      --config.data.valid_file=snli_data/snli.valid.txt \
      --config.data.test_file=snli_data/snli.test.txt

Expected: not reported in the paper.
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.corpus_config(emb_dim=128, hidden=512)
    c.data.tfds_name = "snli"  # the builder used with --config.data.source=tfds
    return c
