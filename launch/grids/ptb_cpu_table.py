"""The PTB table measured on a 2-core CPU (docs/RESULTS.md), smaller than ptb_table1.

    head -n 3000 $PTB/ptb.train.txt > train.txt   # and the first 1000 lines of
    head -n 1000 $PTB/ptb.valid.txt > valid.txt   # valid and test
    head -n 1000 $PTB/ptb.test.txt > test.txt
    python -m bnvae_jax.sweep --config=configs/ptb.py \
      --grid=launch/grids/ptb_cpu_table.py --out=runs/ptb_cpu --seeds=2 \
      --config.data.train_file=train.txt --config.data.valid_file=valid.txt \
      --config.data.test_file=test.txt
    python -m bnvae_jax.report runs/ptb_cpu

The 6-epoch protocol of ptb_table1 on the first 3000 training sentences; the
final IW-NLL (500 samples) on the first 200 test sentences only; SA-VAE with 5
SVI steps instead of 20 (each step costs about a VAE step, twice over with the
exact gradient through it). Everything else is ptb_table1's.
"""

import pathlib
import runpy

SEEDS = (783435, 101)
CPU = {
    "eval.iw_max_sentences": 200,
    "eval.iw_splits": "test",
    "data.eval_batch_size": 100,
}
CHANGED = {  # entry: (its name here, overrides added to ptb_table1's)
    "sa_vae": ("sa_vae_svi5", {"model.svi_steps": 5}),
    "cyclic": ("cyclic", {"train.cycles": 3}),
    "cyclic_epoch_reset": ("cyclic_epoch_reset", {"train.kl_warmup_epochs": 1.0}),
    "bn_vae_learnable_gamma": ("bn_vae_learn_gamma", {}),
}
DROPPED = {"bn_vae_0.7", "beta_vae_0.8"}  # one setting per method here


def sweep(add):
    def add_cpu(name, **overrides):
        name, changed = CHANGED.get(name, (name, {}))
        if name not in DROPPED:
            add(name, **overrides | CPU | changed)

    ptb_table1 = pathlib.Path(__file__).with_name("ptb_table1.py")
    runpy.run_path(str(ptb_table1))["sweep"](add_cpu)
