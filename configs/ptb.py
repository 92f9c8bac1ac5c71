"""Penn Treebank (Mikolov's LM split); not in the paper, sizes of [BN]'s config.

    python -m bnvae_jax.main --config=configs/ptb.py --workdir=runs/ptb \
      --config.data.train_file=ptb.train.txt \
      --config.data.valid_file=ptb.valid.txt \
      --config.data.test_file=ptb.test.txt

Expected: see docs/RESULTS.md.
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.corpus_config(emb_dim=256, hidden=256)
    c.data.tfds_name = "ptb"  # the builder used with --config.data.source=tfds
    return c
