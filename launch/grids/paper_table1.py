"""The paper's full Table 1/8 grid (Yahoo and Yelp share it): 37 entries.

Used through ``yahoo_table1.py`` and ``yelp_table1.py``, which differ only in
the command in their docstrings; the protocol (100 epochs, KL weight 0 -> 1
over 10 epochs, IW-NLL with 500 samples) is the dataset config's
(``bnvae_jax.config.corpus_config``). Seeds: the paper's five.

FB (λ) is free bits on the whole KL (``free_bits``); with the pretrained
encoder (AE+FB, Li et al.) it is per dimension (``free_bits_dim``).
"""


def _entry(name: str, method: str, **knobs) -> dict:
    """A grid row; ``knobs`` use '__' for '.' (``model__gamma`` = model.gamma)."""
    return {"name": name, "method": method} | {
        k.replace("__", "."): v for k, v in knobs.items()
    }


def get_seeds() -> list[int]:
    return [783435, 101, 202, 303, 404]


def get_grid() -> list[dict]:
    grid = [_entry("lstm_lm", "lstm_lm"), _entry("vae", "vae")]
    grid += [
        _entry(f"beta_vae_{b}", "beta_vae", train__beta=b) for b in (0.2, 0.4, 0.6, 0.8)
    ]
    grid += [
        _entry("cyclic", "cyclic"),
        _entry("skip_vae", "skip_vae"),
        _entry("sa_vae", "sa_vae"),
        _entry("agg_vae", "agg_vae"),
    ]
    grid += [
        _entry(f"free_bits_{t}", "free_bits", train__target_kl=float(t)) for t in (4, 5)
    ]
    grid += [
        _entry(f"delta_vae_{d}", "delta_vae", model__delta=d)
        for d in (0.1, 0.15, 0.2, 0.25)
    ]
    grid += [
        _entry(f"vmf_vae_{k}", "vmf_vae", model__kappa=float(k))
        for k in (13, 16, 20, 23, 25, 30)
    ]
    grid += [
        _entry(f"bn_vae_{g}", "bn_vae", model__gamma=g)
        for g in (0.3, 0.4, 0.5, 0.6, 0.7)
    ]
    # Pretrained encoder (Li et al.): the AE's encoder, a fresh decoder and head.
    grid.append(_entry("ae", "ae"))
    grid += [
        _entry(
            f"ae_fb_{t}",
            "free_bits_dim",
            train__target_kl=float(t),
            init_from="{run:ae}",
        )
        for t in range(2, 9)
    ]
    grid += [
        _entry(f"ae_bn_vae_{g}", "bn_vae", model__gamma=g, init_from="{run:ae}")
        for g in (0.6, 0.7)
    ]
    return grid
