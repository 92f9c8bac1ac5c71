"""Short Yelp (Li et al. 2019) for the classification experiment (Table 3).

    python -m bnvae_jax.main --config=configs/short_yelp.py --workdir=runs/short_yelp \
      --config.data.train_file=short_yelp_data/short_yelp.train.txt \
      --config.data.valid_file=short_yelp_data/short_yelp.valid.txt \
      --config.data.test_file=short_yelp_data/short_yelp.test.txt

or through the TFDS builder (prepared from the files in DIR on first use; DIR holds
Li et al.'s short_yelp.*.txt or Shen et al.'s sentiment.{train,dev,test}.{0,1}):

    python -m bnvae_jax.main --config=configs/short_yelp.py --workdir=runs/short_yelp \
      --config.data.source=tfds --config.data.tfds_manual_dir=DIR \
      --config.data.tfds_data_dir=tfds_data

Expected: feeds the few-label classifier (paper Table 3):

    python -m bnvae_jax.classify --workdir=runs/short_yelp \
      --train_file=short_yelp_data/short_yelp.train.txt \
      --valid_file=short_yelp_data/short_yelp.valid.txt \
      --test_file=short_yelp_data/short_yelp.test.txt \
      --labels=100,500,1000,2000,10000 --seeds=10
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.corpus_config(emb_dim=128, hidden=512, labelled=True)
    c.data.tfds_name = "short_yelp"  # the builder used with --config.data.source=tfds
    return c
