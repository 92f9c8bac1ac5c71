"""Short Yelp (Li et al. 2019) for the classification experiment (Table 3).

    python -m bnvae_jax.main --config=configs/short_yelp.py --workdir=runs/short_yelp \
      --config.data.train_file=short_yelp_data/short_yelp.train.txt \
      --config.data.valid_file=short_yelp_data/short_yelp.valid.txt \
      --config.data.test_file=short_yelp_data/short_yelp.test.txt

Expected: feeds the few-label classifier.
"""

from bnvae_jax import config_lib


def get_config():
    c = config_lib.default_config()
    c.data.source = "files"
    c.data.labelled = True
    c.model.emb_dim = 128
    c.model.enc_hidden = 512
    c.model.dec_hidden = 512
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
