"""The reduced PTB table: every method once, the protocol of docs/RESULTS.md.

    python launch/sweep.py --config=configs/ptb.py \
      --grid=launch/grids/ptb_table1.py --out=runs/ptb_sweep --seeds=2 \
      --config.data.train_file=$PTB/ptb.train.txt \
      --config.data.valid_file=$PTB/ptb.valid.txt \
      --config.data.test_file=$PTB/ptb.test.txt
    python launch/report.py runs/ptb_sweep

Protocol (launch/ptb_quality.sh): 6 epochs, KL weight 0 -> 1 over 2 epochs, SGD
learning rate 0.5, IW-NLL with 500 samples on the first 1000 test sentences.
"""


def _protocol() -> dict:
    return {
        "train.epochs": 6,
        "train.kl_start": 0.0,
        "train.kl_warmup_epochs": 2.0,
        "train.learning_rate": 0.5,
        "eval.iw_samples": 500,
        "eval.iw_max_sentences": 1000,
    }


def _entry(name: str, method: str, **knobs) -> dict:
    """A grid row; ``knobs`` use '__' for '.' (``model__gamma`` = model.gamma)."""
    row = {"name": name, "method": method, **_protocol()}
    row.update({k.replace("__", "."): v for k, v in knobs.items()})
    return row


def get_seeds() -> list[int]:
    return [783435, 101, 202, 303, 404]


def get_grid() -> list[dict]:
    return [
        _entry("lstm_lm", "lstm_lm"),
        _entry("vae", "vae"),
        _entry("bn_vae_0.6", "bn_vae", model__gamma=0.6),
        _entry("bn_vae_0.7", "bn_vae", model__gamma=0.7),
        _entry(
            "bn_vae_learnable_gamma",
            "bn_vae",
            model__gamma=0.6,
            model__learn_gamma=True,
            model__gamma_min=0.3,
        ),
        _entry("beta_vae_0.2", "beta_vae", train__beta=0.2),
        _entry("beta_vae_0.8", "beta_vae", train__beta=0.8),
        _entry("cyclic", "cyclic"),
        # The reference's --cycle restarts the 2-epoch ramp: 3 cycles in 6 epochs.
        _entry("cyclic_epoch_reset", "cyclic_epoch_reset", train__cycle_epochs=2),
        _entry("free_bits_4", "free_bits", train__target_kl=4.0),
        _entry("free_bits_dim_4", "free_bits_dim", train__target_kl=4.0),
        # The reference's delta-VAE and vMF encoders use the uniform init.
        _entry(
            "delta_vae_0.15", "delta_vae", model__delta=0.15, model__enc_init="uniform"
        ),
        _entry("vmf_vae_13", "vmf_vae", model__kappa=13.0, model__enc_init="uniform"),
        # He et al. anneal from 0.1.
        _entry("agg_vae", "agg_vae", train__kl_start=0.1),
        _entry("sa_vae", "sa_vae"),
        _entry("skip_vae", "skip_vae"),
        # Li et al.'s recipe: an autoencoder, then its encoder with a fresh decoder.
        _entry("ae", "ae"),
        _entry(
            "ae_fb_6",
            "free_bits_dim",
            train__target_kl=6.0,
            init_from="{run:ae}",
        ),
        _entry("ae_bn_vae_0.6", "bn_vae", model__gamma=0.6, init_from="{run:ae}"),
    ]
