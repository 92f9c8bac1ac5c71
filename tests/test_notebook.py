"""The quickstart notebook runs top to bottom (tiny sizes, CPU)."""

import math
import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
)


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(str(out.get("data", {}).get("text/markdown", "")))
    return "".join(parts)


def test_quickstart_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    # It shows the public API: bnvae_jax.load and the commands, no internals
    # (only the config file it writes starts from bnvae_jax.config).
    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for internal in ("tasks", "evaluation", "analysis", "tools", "models", "data"):
        assert f"bnvae_jax.{internal}" not in source
    env_before = os.environ.get("JAX_PLATFORMS")
    os.environ["JAX_PLATFORMS"] = "cpu"  # the kernel inherits the environment
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("JAX_PLATFORMS", None)
        else:
            os.environ["JAX_PLATFORMS"] = env_before
    text = "\n".join(_outputs_text(c) for c in notebook.cells if c.cell_type == "code")
    # The study's summary, the results table, decodings and the interpolation ran.
    assert "bn_vae_g1_b32" in text and "vae_b32" in text
    assert "| bn_vae (γ=1.0) |" in text and "| vae |" in text
    assert "reconstructions" in text and "x1:" in text and "z=" in text
    # encode/decode, per-sentence scores, and an export that loads back.
    assert "z mean | z ~ q |" in text
    header = "iw_nll  elbo_nll    rec    kl  tokens\n"
    assert header in text
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(rows) == 4
    for row in rows:
        iw_nll, elbo_nll, rec, kl, tokens = (float(v) for v in row.split())
        assert all(math.isfinite(v) for v in (iw_nll, elbo_nll, rec, kl))
        assert iw_nll > 0 and kl >= 0 and tokens == 9  # 8 words and </s>
    assert "'model.json', 'variables.npz', 'vocab.txt'" in text
    assert "Test metrics of the training run" in text
    assert "same codes after save + load: True" in text
    images = [
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 2  # Fig. 1 and the dynamics plot
