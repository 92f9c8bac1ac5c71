"""The paper's full Table 1/8 grid (Yahoo and Yelp share it): 37 entries.

Used through ``yahoo_table1.py`` and ``yelp_table1.py``, which differ only in
the command in their docstrings; the protocol (100 epochs, KL weight 0 -> 1
over 10 epochs, IW-NLL with 500 samples) is the dataset config's
(``bnvae_jax.config.corpus_config``). Seeds: the paper's five.

FB (λ) is free bits on the whole KL (``free_bits``); with the pretrained
encoder (AE+FB, Li et al.) it is per dimension (``free_bits_dim``).
"""

SEEDS = (783435, 101, 202, 303, 404)


def sweep(add):
    add("lstm_lm", method="lstm_lm")
    add("vae", method="vae")
    for beta in (0.2, 0.4, 0.6, 0.8):
        add(f"beta_vae_{beta}", method="beta_vae", **{"train.beta": beta})
    for method in ("cyclic", "skip_vae", "sa_vae", "agg_vae"):
        add(method, method=method)
    for kl in (4, 5):
        add(f"free_bits_{kl}", method="free_bits", **{"train.target_kl": float(kl)})
    for delta in (0.1, 0.15, 0.2, 0.25):
        add(f"delta_vae_{delta}", method="delta_vae", **{"model.delta": delta})
    for kappa in (13, 16, 20, 23, 25, 30):
        add(f"vmf_vae_{kappa}", method="vmf_vae", **{"model.kappa": float(kappa)})
    for gamma in (0.3, 0.4, 0.5, 0.6, 0.7):
        add(f"bn_vae_{gamma}", method="bn_vae", **{"model.gamma": gamma})
    # Pretrained encoder (Li et al.): the AE's encoder, a fresh decoder and head.
    add("ae", method="ae")
    for kl in range(2, 9):
        knobs = {"train.target_kl": float(kl), "init_from": "{run:ae}"}
        add(f"ae_fb_{kl}", method="free_bits_dim", **knobs)
    for gamma in (0.6, 0.7):
        knobs = {"model.gamma": gamma, "init_from": "{run:ae}"}
        add(f"ae_bn_vae_{gamma}", method="bn_vae", **knobs)
