"""Yelp reviews (Yang et al. 2017), the paper's Table 1/8; lines are LABEL<TAB>TEXT.

    python -m bnvae_jax.main --config=configs/yelp.py --workdir=runs/yelp \
      --config.data.train_file=yelp_data/yelp.train.txt \
      --config.data.valid_file=yelp_data/yelp.valid.txt \
      --config.data.test_file=yelp_data/yelp.test.txt

Expected: NLL ~ 356, KL ~ 6.5, AU 32 with gamma 0.6 (paper Table 1).
"""

from bnvae_jax import config_lib


def get_config():
    c = config_lib.default_config()
    c.data.source = "files"
    c.data.labelled = True
    c.model.emb_dim = 512
    c.model.enc_hidden = 1024
    c.model.dec_hidden = 1024
    c.model.latent_dim = 32
    c.model.dec_dropout_in = 0.5
    c.model.dec_dropout_out = 0.5
    c.data.batch_size = 32
    c.train.epochs = 100
    c.train.kl_start = 0.0  # the paper: KL weight 0 -> 1 over the first 10 epochs
    c.train.kl_warmup_epochs = 10.0
    c.train.test_every_epochs = 5
    c.eval.iw_samples = 500
    return c
