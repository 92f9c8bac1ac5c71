"""Tiny sizes for tests and smoke runs (seconds on a CPU).

python -m bnvae_jax.main --config=configs/tiny.py --workdir=/tmp/tiny
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.default_config()
    s = c.data.synthetic
    s.num_train, s.num_valid, s.num_test = 256, 64, 64
    s.vocab_size, s.length, s.emb_dim, s.hidden_dim = 30, 6, 8, 8
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.model.emb_dim = 8
    c.model.enc_hidden = 16
    c.model.dec_hidden = 16
    c.model.latent_dim = 4
    c.train.epochs = 2
    c.train.kl_warmup_epochs = 1.0
    c.train.checkpoint_every_steps = 5
    c.train.log_every_steps = 5
    c.train.test_every_epochs = 0
    c.eval.iw_samples = 20
    c.eval.iw_chunk = 10
    c.eval.iw_batch = 8
    c.eval.num_reconstructions = 3
    c.eval.num_prior_samples = 3
    c.eval.max_decode_len = 12
    return c
