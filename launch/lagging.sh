#!/usr/bin/env bash
# The synthetic lagging study (paper App. A.1, Figs. 1-2) and a Fig. 3-style
# dynamics plot, reduced to snapshots up to step 8000 (the config's default runs
# to step 31250, 50 epochs at b=32); copies the figures to docs/figures/.
# About 15-20 minutes on a 2-core CPU. Rerun to resume; extra arguments are
# passed to the study (e.g. --config.study.batch_sizes="(32,)").
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-runs/lagging}
python -m bnvae_jax.lagging --config=configs/lagging.py --workdir="$WORKDIR" \
  --config.study.snapshot_steps="(0, 200, 1000, 3000, 8000)" "$@"
python -m bnvae_jax.dynamics --workdir="$WORKDIR/vae_b32" \
  --workdir="$WORKDIR/bn_vae_g0.5_b32" --workdir="$WORKDIR/bn_vae_g1_b32" \
  --title="VAE" --title="BN-VAE γ=0.5" --title="BN-VAE γ=1" \
  --output="$WORKDIR/dynamics.png"
mkdir -p docs/figures
cp "$WORKDIR/lagging_fig1.png" "$WORKDIR/lagging_fig2.png" "$WORKDIR/dynamics.png" \
  "$WORKDIR/lagging_summary.json" docs/figures/
