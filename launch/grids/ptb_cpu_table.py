"""The PTB table measured on a 2-core CPU (docs/RESULTS.md), smaller than ptb_table1.

    head -n 3000 $PTB/ptb.train.txt > train.txt   # and the first 1000 lines of
    head -n 1000 $PTB/ptb.valid.txt > valid.txt   # valid and test
    head -n 1000 $PTB/ptb.test.txt > test.txt
    python launch/sweep.py --config=configs/ptb.py \
      --grid=launch/grids/ptb_cpu_table.py --out=runs/ptb_cpu --seeds=2 \
      --config.data.train_file=train.txt --config.data.valid_file=valid.txt \
      --config.data.test_file=test.txt
    python launch/report.py runs/ptb_cpu

The 6-epoch protocol of ptb_table1 on the first 3000 training sentences; the
final IW-NLL (500 samples) on the first 200 test sentences only; SA-VAE with 5
SVI steps instead of 20 (each step costs about a VAE step, twice over with the
exact gradient through it). Everything else is ptb_table1's.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "ptb_table1", pathlib.Path(__file__).with_name("ptb_table1.py")
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

_CPU = {
    "eval.iw_max_sentences": 200,
    "eval.iw_splits": "test",
    "data.eval_batch_size": 100,
}
_DROPPED = {"bn_vae_0.7", "beta_vae_0.8"}  # one setting per method here


def get_seeds() -> list[int]:
    return [783435, 101]


def get_grid() -> list[dict]:
    grid = []
    for row in _base.get_grid():
        if row["name"] in _DROPPED:
            continue
        row = dict(row, **_CPU)
        if row["name"] == "sa_vae":
            row.update({"name": "sa_vae_svi5", "model.svi_steps": 5})
        if row["name"] == "cyclic":
            row["train.cycles"] = 3
        if row["name"] == "cyclic_epoch_reset":
            row["train.kl_warmup_epochs"] = 1.0
        if row["name"] == "bn_vae_learnable_gamma":
            row["name"] = "bn_vae_learn_gamma"
        grid.append(row)
    return grid
