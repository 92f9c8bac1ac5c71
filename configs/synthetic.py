"""He et al.'s synthetic setting (paper App. A.1): scalar latent, tiny LSTMs.

python -m bnvae_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
"""

from bnvae_jax import config as config_lib


def get_config():
    c = config_lib.default_config()
    c.data.synthetic.num_train = 20000
    c.data.synthetic.num_valid = 10000
    c.data.synthetic.num_test = 10000
    c.data.synthetic.vocab_size = 1000
    c.data.synthetic.emb_dim = 100
    c.data.synthetic.hidden_dim = 100
    c.data.batch_size = 32  # the paper's Fig. 1 (He et al. use 16)
    c.model.emb_dim = 50
    c.model.enc_hidden = 50
    c.model.dec_hidden = 50
    c.model.latent_dim = 1  # toy.py overrides nz = 1
    c.model.gamma = 1.0
    # PyTorch's default encoder init, as [BN]'s encoder. He et al.'s U(±0.1)/U(±0.01)
    # starts BN-VAE's pre-BN variance of μ near 1e-9, far below the BN eps (1e-5),
    # where the KL bound does not hold (config validation warns about it).
    c.model.enc_init = "torch_default"
    c.train.epochs = 50
    c.train.decay_epoch = 2
    c.train.load_best_epoch = 0
    c.train.kl_start = 1.0
    c.train.kl_warmup_epochs = 0.0
    c.train.test_every_epochs = 1
    return c
