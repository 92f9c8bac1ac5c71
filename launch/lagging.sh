#!/usr/bin/env bash
# The synthetic lagging study (paper App. A.1, Figs. 1-2) and a Fig. 3-style
# dynamics plot, reduced to snapshots up to step 8000 (the config's default runs
# to step 31250, 50 epochs at b=32). About 15-20 minutes on a 2-core CPU. Rerun
# to resume. Extra arguments go to the study and replace the defaults below,
# e.g. a short run:
#
#   WORKDIR=/tmp/lag launch/lagging.sh --config.study.snapshot_steps="(0, 50)"
#
# The figures stay in $WORKDIR; UPDATE_DOCS=1 also copies them over the
# committed ones in docs/figures/.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-runs/lagging}
PYTHON=${PYTHON:-python}
STEPS="(0, 200, 1000, 3000, 8000)"
for arg in "$@"; do
  # A tuple given twice would be appended to, not replaced: the user's wins.
  case "$arg" in --config.study.snapshot_steps=*) STEPS="${arg#*=}" ;; esac
done
args=()
for arg in "$@"; do
  case "$arg" in --config.study.snapshot_steps=*) ;; *) args+=("$arg") ;; esac
done
"$PYTHON" -m bnvae_jax.lagging --config=configs/lagging.py --workdir="$WORKDIR" \
  --config.study.snapshot_steps="$STEPS" ${args[@]+"${args[@]}"}
runs=() titles=()
for pair in "vae_b32:VAE" "bn_vae_g0.5_b32:BN-VAE γ=0.5" "bn_vae_g1_b32:BN-VAE γ=1"; do
  if [ -d "$WORKDIR/${pair%%:*}" ]; then
    runs+=("--workdir=$WORKDIR/${pair%%:*}") titles+=("--title=${pair#*:}")
  fi
done
if [ ${#runs[@]} -gt 0 ]; then
  "$PYTHON" -m bnvae_jax.dynamics "${runs[@]}" "${titles[@]}" \
    --output="$WORKDIR/dynamics.png"
fi
if [ "${UPDATE_DOCS:-0}" = 1 ]; then
  mkdir -p docs/figures
  cp "$WORKDIR/lagging_fig1.png" "$WORKDIR/lagging_fig2.png" "$WORKDIR/dynamics.png" \
    "$WORKDIR/lagging_summary.json" docs/figures/
  echo "copied the figures to docs/figures/"
fi
