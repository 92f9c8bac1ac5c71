"""Yelp reviews (Yang et al. 2017), the paper's Table 1/8; lines are LABEL<TAB>TEXT.

    python -m bnvae_jax.main --config=configs/yelp.py --workdir=runs/yelp \
      --config.data.train_file=yelp_data/yelp.train.txt \
      --config.data.valid_file=yelp_data/yelp.valid.txt \
      --config.data.test_file=yelp_data/yelp.test.txt

Expected: NLL ~ 356, KL ~ 6.5, AU 32 with gamma 0.6 (paper Table 1).
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.corpus_config(emb_dim=512, hidden=1024, labelled=True)
    c.data.tfds_name = "yelp"  # the builder used with --config.data.source=tfds
    return c
