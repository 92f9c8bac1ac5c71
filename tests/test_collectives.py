"""Data parallelism moves only reductions: no all-gather of activations.

One subprocess with 8 fake CPU devices compiles the train step (jit and pmap)
and the evaluation kernels (one-sample ELBO pass, IW-NLL) of the tiny config at
a global batch of 32 and reports the size of every all-gather in the
optimized HLO. Gradients and statistics are all-reduced; anything gathered
would be per-example data (activations or their gradients), which each device
should keep to its own rows.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8
# The largest all-gather allowed: a handful of scalars per device is fine; one
# row of activations per example (32 x hidden) is not.
MAX_GATHERED = 256
_GATHER = re.compile(r"=\s*\(?([a-z0-9]+\[[0-9,]*\])[^=]*?\sall-gather(?:-start)?\(")


def gathered_sizes(hlo: str) -> list[int]:
    """Element counts of the all-gathers in an HLO module's text."""
    sizes = []
    for shape in _GATHER.findall(hlo):
        dims = shape[shape.index("[") + 1 : -1]
        sizes.append(math.prod(int(d) for d in dims.split(",") if d))
    return sizes


def test_gathered_sizes_reads_hlo():
    hlo = (
        "%all-gather.1 = f32[7,32,64]{2,0,1} all-gather(%fusion), dimensions={1}\n"
        "%ar = f32[4]{0} all-reduce(%x), to_apply=%add\n"
        "%all-gather = s32[32,2]{1,0} all-gather(%y), channel_id=4\n"
    )
    assert gathered_sizes(hlo) == [7 * 32 * 64, 64]


def _worker(out_path: str) -> None:
    import jax
    import numpy as np

    from bnvae_jax import cli
    from bnvae_jax.evaluation import passes
    from bnvae_jax.evaluation import run as eval_run
    from bnvae_jax.tasks import text_vae as train
    from bnvae_jax.training import steps

    assert jax.device_count() == DEVICES, jax.devices()
    report = {}
    for mode in ("jit", "pmap"):
        config = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
        config.data.batch_size = 32
        config.parallel.mode = mode
        trainer, state = train.setup(config, tempfile.mkdtemp(), write=False)
        batch = trainer.ctx.par.shard_batch(
            train.train_arrays(trainer.plan.make_batch(0))
        )
        fns = train.step_fns(trainer)
        if mode == "jit":
            lowered = steps.jit_train_step(fns).lower(state, batch, trainer.rng)
        else:

            def step(state, batch, rng, sub, fns=fns):
                return steps.train_step(state, batch, rng, fns=fns, sub=sub)

            mapped = trainer.ctx.par.pmap_step(step, num_args=4)
            lowered = mapped.lower(state, batch, trainer.rng, np.int32(0))
        report[f"train/{mode}"] = gathered_sizes(lowered.compile().as_text())
        variables = train.steps.variables(state)
        plan = eval_run.plan_batches(trainer.data.split("valid"), 32, 8)
        b = eval_run.batch_arrays(plan.make_batch(0))
        rows = (b["tokens"], b["lengths"], b["mask"], b["index"])
        iw = {"num_samples": 20, "chunk": 10}
        for kind, fn, sizes in (
            ("elbo", passes._elbo_kernel, {}),
            ("iw", passes._iw_kernel, iw),
        ):
            kernel = passes._jitted(fn, trainer.model, par=trainer.ctx.par, **sizes)
            lowered = kernel.lower(variables, jax.random.key(0), *rows)
            report[f"{kind}/{mode}"] = gathered_sizes(lowered.compile().as_text())
    pathlib.Path(out_path).write_text(json.dumps(report))


@pytest.fixture(scope="module")
def gathers(tmp_path_factory):
    from conftest import xla_flags

    out = tmp_path_factory.mktemp("collectives") / "report.json"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(DEVICES),
    }
    proc = subprocess.run(
        [sys.executable, __file__, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "program",
    ["train/jit", "train/pmap", "elbo/jit", "elbo/pmap", "iw/jit", "iw/pmap"],
)
def test_no_activation_all_gather(gathers, program):
    sizes = gathers[program]
    assert max(sizes, default=0) <= MAX_GATHERED, (program, sizes)


if __name__ == "__main__":
    _worker(sys.argv[1])
