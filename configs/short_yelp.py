"""Short Yelp (Li et al. 2019) for the classification experiment (Table 3).

    python -m bnvae_jax.main --config=configs/short_yelp.py --workdir=runs/short_yelp \
      --config.data.train_file=short_yelp_data/short_yelp.train.txt \
      --config.data.valid_file=short_yelp_data/short_yelp.valid.txt \
      --config.data.test_file=short_yelp_data/short_yelp.test.txt

Expected: feeds the few-label classifier.
"""

from bnvae_jax import config_lib


def get_config():
    return config_lib.corpus_config(emb_dim=128, hidden=512, labelled=True)
