"""bnvae_jax: BN-VAE (Zhu et al., ACL 2020) and its baselines in JAX/Flax.

Use a trained model from Python::

    import bnvae_jax
    model = bnvae_jax.load("runs/bn_vae")      # a workdir or an exported folder
    z = model.encode(["the cat sat"])          # [1, latent_dim]
    model.decode(z, strategy="beam")           # ['the cat sat']
    model.score(["the cat sat"]).iw_nll        # nats per sentence
    model.save("exported/bn_vae")              # a self-contained folder

Public names: ``load``, ``TextModel``, ``DialogModel``, ``Scores``, ``LoadError``.
Training and evaluation are commands: ``python -m bnvae_jax.main``,
``python -m bnvae_jax.evaluate``, ``python -m bnvae_jax.export`` (each
answers ``--help``).
"""

__all__ = ["load", "TextModel", "DialogModel", "Scores", "LoadError"]


def __getattr__(name: str):
    # Imported on first use: ``import bnvae_jax.models`` stays free of the
    # API's imports (orbax, the tasks).
    if name in __all__:
        from bnvae_jax import api

        return getattr(api, name)
    raise AttributeError(f"module 'bnvae_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
