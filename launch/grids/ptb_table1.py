"""The reduced PTB table: every method once, the protocol of docs/RESULTS.md.

    python -m bnvae_jax.sweep --config=configs/ptb.py \
      --grid=launch/grids/ptb_table1.py --out=runs/ptb_sweep --seeds=2 \
      --config.data.train_file=$PTB/ptb.train.txt \
      --config.data.valid_file=$PTB/ptb.valid.txt \
      --config.data.test_file=$PTB/ptb.test.txt
    python -m bnvae_jax.report runs/ptb_sweep

Protocol (launch/ptb_quality.sh): 6 epochs, KL weight 0 -> 1 over 2 epochs, SGD
learning rate 0.5, IW-NLL with 500 samples on the first 1000 test sentences.
"""

SEEDS = (783435, 101, 202, 303, 404)
PROTOCOL = {
    "train.epochs": 6,
    "train.kl_start": 0.0,
    "train.kl_warmup_epochs": 2.0,
    "train.learning_rate": 0.5,
    "eval.iw_samples": 500,
    "eval.iw_max_sentences": 1000,
}


def sweep(add):
    def entry(name, method, **knobs):  # the protocol, then the entry's own knobs
        add(name, **{"method": method, **PROTOCOL} | knobs)

    entry("lstm_lm", "lstm_lm")
    entry("vae", "vae")
    entry("bn_vae_0.6", "bn_vae", **{"model.gamma": 0.6})
    entry("bn_vae_0.7", "bn_vae", **{"model.gamma": 0.7})
    learn = {"model.gamma": 0.6, "model.learn_gamma": True, "model.gamma_min": 0.3}
    entry("bn_vae_learnable_gamma", "bn_vae", **learn)
    entry("beta_vae_0.2", "beta_vae", **{"train.beta": 0.2})
    entry("beta_vae_0.8", "beta_vae", **{"train.beta": 0.8})
    entry("cyclic", "cyclic")
    # The reference's --cycle restarts the 2-epoch ramp: 3 cycles in 6 epochs.
    entry("cyclic_epoch_reset", "cyclic_epoch_reset", **{"train.cycle_epochs": 2})
    entry("free_bits_4", "free_bits", **{"train.target_kl": 4.0})
    entry("free_bits_dim_4", "free_bits_dim", **{"train.target_kl": 4.0})
    # The reference's delta-VAE and vMF encoders use the uniform init.
    uniform = {"model.enc_init": "uniform"}
    entry("delta_vae_0.15", "delta_vae", **{"model.delta": 0.15}, **uniform)
    entry("vmf_vae_13", "vmf_vae", **{"model.kappa": 13.0}, **uniform)
    # He et al. anneal from 0.1.
    entry("agg_vae", "agg_vae", **{"train.kl_start": 0.1})
    entry("sa_vae", "sa_vae")
    entry("skip_vae", "skip_vae")
    # Shen et al. 2021: model.du_gamma 0.5, du_dropout 0.2, du_alpha 1 (defaults).
    entry("du_vae", "du_vae")
    # Li et al.'s recipe: an autoencoder, then its encoder with a fresh decoder.
    entry("ae", "ae")
    entry("ae_fb_6", "free_bits_dim", **{"train.target_kl": 6.0}, init_from="{run:ae}")
    entry("ae_bn_vae_0.6", "bn_vae", **{"model.gamma": 0.6}, init_from="{run:ae}")
