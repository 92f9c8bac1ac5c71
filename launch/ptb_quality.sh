#!/usr/bin/env bash
# The PTB quality run of docs/RESULTS.md: VAE and BN-VAE (gamma 0.6), 6 epochs each,
# then the results table. Usage: launch/ptb_quality.sh PTB_DIR [RUNS_DIR]
# (PTB_DIR holds ptb.train.txt, ptb.valid.txt, ptb.test.txt; Mikolov's split.)
set -euo pipefail
data=${1:?usage: launch/ptb_quality.sh PTB_DIR [RUNS_DIR]}
runs=${2:-runs/ptb_quality}
for method in bn_vae vae; do
  python -m bnvae_jax.main --config=configs/ptb.py --workdir="$runs/$method" \
    --config.method="$method" --config.model.gamma=0.6 --config.seed=783435 \
    --config.data.train_file="$data/ptb.train.txt" \
    --config.data.valid_file="$data/ptb.valid.txt" \
    --config.data.test_file="$data/ptb.test.txt" \
    --config.train.epochs=6 --config.train.kl_start=0.0 \
    --config.train.kl_warmup_epochs=2 --config.train.learning_rate=0.5 \
    --config.eval.iw_samples=500 --config.eval.iw_max_sentences=1000
done
python -m bnvae_jax.report "$runs"/*/results.json
