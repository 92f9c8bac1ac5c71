"""Penn Treebank (Mikolov's LM split); not in the paper, sizes of [BN]'s config.

    python -m bnvae_jax.main --config=configs/ptb.py --workdir=runs/ptb \
      --config.data.train_file=ptb.train.txt \
      --config.data.valid_file=ptb.valid.txt \
      --config.data.test_file=ptb.test.txt

Expected: see docs/RESULTS.md.
"""

from bnvae_jax import config_lib


def get_config():
    c = config_lib.default_config()
    c.data.source = "files"
    c.data.labelled = False
    c.model.emb_dim = 256
    c.model.enc_hidden = 256
    c.model.dec_hidden = 256
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
