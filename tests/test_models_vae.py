import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models import vae as vae_lib


def _batch(lengths, width, vocab=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), width), np.int32)
    for i, length in enumerate(lengths):
        tokens[i, 0] = 1
        tokens[i, 1 : length - 1] = rng.integers(4, vocab, length - 2)
        tokens[i, length - 1] = 2
    return (
        jnp.asarray(tokens),
        jnp.asarray(lengths, jnp.int32),
        jnp.ones(len(lengths), jnp.float32),
    )


def _init(model, tokens, lengths, mask):
    k = jax.random.key(0)
    return model.init(
        {"params": k, "sample": k, "dropout": k}, tokens, lengths, mask, train=False
    )


def test_shapes(tiny_model_config):
    cfg = tiny_model_config()
    model = vae_lib.TextVAE(cfg)
    tokens, lengths, mask = _batch([5, 5, 5], 8)
    variables = _init(model, tokens, lengths, mask)
    out = model.apply(
        variables,
        tokens,
        lengths,
        mask,
        train=False,
        rngs={"sample": jax.random.key(1)},
    )
    assert out.rec.shape == (3,)
    assert out.kl.shape == (3, cfg.latent_dim)
    assert out.z.shape == (3, cfg.latent_dim)
    logits = model.apply(
        variables,
        tokens[:, :-1],
        out.z,
        train=False,
        method=lambda m, *a, **k: m.decoder(*a, **k),
    )
    assert logits.shape == (3, 7, cfg.vocab_size)


def test_encoder_reads_state_at_true_last_token(tiny_model_config):
    model = vae_lib.TextVAE(tiny_model_config(head="gaussian"))
    tokens, lengths, mask = _batch([5, 4], 8)
    variables = _init(model, tokens, lengths, mask)
    noisy = tokens.at[0, 5:].set(7).at[1, 4:].set(9)  # garbage after the rows
    a = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    b = model.apply(variables, noisy, lengths, mask, train=False, method="encode")
    np.testing.assert_allclose(a.mu, b.mu, rtol=1e-6)
    np.testing.assert_allclose(a.logvar, b.logvar, rtol=1e-6)
    # ... and a longer time axis gives the same result.
    wide = jnp.pad(tokens, ((0, 0), (0, 8)))
    c = model.apply(variables, wide, lengths, mask, train=False, method="encode")
    np.testing.assert_allclose(a.mu, c.mu, rtol=1e-5)


def test_reconstruction_counts_only_the_l_plus_one_targets(tiny_model_config):
    cfg = tiny_model_config(head="gaussian")
    model = vae_lib.TextVAE(cfg)
    tokens, lengths, mask = _batch([6, 4], 8)
    variables = _init(model, tokens, lengths, mask)
    z = jax.random.normal(jax.random.key(3), (2, cfg.latent_dim))
    rec = model.apply(
        variables, tokens, lengths, z, train=False, method="reconstruction"
    )
    logits = model.apply(
        variables,
        tokens[:, :-1],
        z,
        train=False,
        method=lambda m, *a, **k: m.decoder(*a, **k),
    )
    logp = jax.nn.log_softmax(logits)
    for i, length in enumerate([6, 4]):
        targets = tokens[i, 1:length]  # w_1 .. w_L </s>
        manual = -sum(float(logp[i, t, targets[t]]) for t in range(length - 1))
        assert float(rec[i]) == pytest.approx(manual, rel=1e-5)


def test_decode_step_matches_teacher_forcing(tiny_model_config):
    cfg = tiny_model_config(head="gaussian", dec_dropout_in=0.0, dec_dropout_out=0.0)
    model = vae_lib.TextVAE(cfg)
    tokens, lengths, mask = _batch([6, 6], 8)
    variables = _init(model, tokens, lengths, mask)
    z = jax.random.normal(jax.random.key(3), (2, cfg.latent_dim))
    logits = model.apply(
        variables,
        tokens[:, :-1],
        z,
        train=False,
        method=lambda m, *a, **k: m.decoder(*a, **k),
    )
    state = model.apply(variables, z, method="decode_init")
    for t in range(5):
        state, step_logits = model.apply(
            variables, state, tokens[:, t], z, method="decode_step"
        )
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheme", ["torch_default", "uniform"])
def test_init_schemes(tiny_model_config, scheme):
    cfg = tiny_model_config(
        enc_init=scheme, vocab_size=400, emb_dim=64, enc_hidden=64, dec_hidden=64
    )
    model = vae_lib.TextVAE(cfg)
    tokens, lengths, mask = _batch([5, 5], 8)
    params = _init(model, tokens, lengths, mask)["params"]
    emb = np.asarray(params["encoder"]["embed"]["embedding"])
    w_hh = np.asarray(params["encoder"]["lstm"]["w_hh"])
    dec_emb = np.asarray(params["decoder"]["embed"]["embedding"])
    dec_w = np.asarray(params["decoder"]["lstm"]["w_ih"])
    if scheme == "torch_default":
        assert emb.std() == pytest.approx(1.0, rel=0.05)  # N(0, 1)
        assert np.abs(w_hh).max() <= 1 / 8 and np.abs(w_hh).max() > 0.12
    else:
        assert np.abs(emb).max() <= 0.1 and np.abs(emb).max() > 0.09
        assert np.abs(w_hh).max() <= 0.01
    # The decoder is always U(±0.01), embeddings U(±0.1).
    assert np.abs(dec_emb).max() <= 0.1
    assert np.abs(dec_w).max() <= 0.01


def test_weight_norm_remedy_gives_unit_norm_mu_columns(tiny_model_config):
    import dataclasses

    cfg = dataclasses.replace(tiny_model_config(), bn_remedy="weight_norm")
    tokens, lengths, _ = _batch([5, 6, 7], 8)
    enc = vae_lib.Encoder(cfg)
    params = enc.init(jax.random.key(0), tokens, lengths)
    mu, logvar = enc.apply(params, tokens, lengths)
    plain = vae_lib.Encoder(dataclasses.replace(cfg, bn_remedy="none"))
    raw_mu, raw_logvar = plain.apply(params, tokens, lengths)  # same parameters
    kernel = np.asarray(params["params"]["to_latent"]["kernel"])
    n = cfg.latent_dim
    norms = np.linalg.norm(kernel[:, :n], axis=0)
    np.testing.assert_allclose(np.asarray(logvar), np.asarray(raw_logvar))
    np.testing.assert_allclose(
        np.asarray(mu), np.asarray(raw_mu) / norms, rtol=1e-5, atol=1e-7
    )
    # Scaling the μ weights no longer changes μ.
    scaled = jax.tree.map(lambda x: x, params)
    scaled["params"]["to_latent"]["kernel"] = jnp.asarray(kernel * 0.01)
    np.testing.assert_allclose(
        np.asarray(enc.apply(scaled, tokens, lengths)[0]),
        np.asarray(mu),
        rtol=1e-4,
        atol=1e-7,
    )
