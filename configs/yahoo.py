"""Yahoo Answers (Yang et al. 2017), the paper's Table 1/8.

    python -m bnvae_jax.main --config=configs/yahoo.py --workdir=runs/yahoo \
      --config.data.train_file=yahoo_data/yahoo.train.txt \
      --config.data.valid_file=yahoo_data/yahoo.valid.txt \
      --config.data.test_file=yahoo_data/yahoo.test.txt

Expected: NLL ~ 327, KL ~ 6, MI ~ 5.6, AU 32 with gamma 0.6 (paper Table 1).
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.corpus_config(emb_dim=512, hidden=1024)
    c.data.tfds_name = "yahoo"  # the builder used with --config.data.source=tfds
    return c
