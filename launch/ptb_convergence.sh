#!/usr/bin/env bash
# VAE against BN-VAE (gamma 0.6) on full PTB with the paper's protocol: KL weight
# 0 -> 1 over 10 epochs, plain SGD (lr 0.5), clip 5, plateau decay (5 epochs,
# x0.5, stop at the 5th decay, best checkpoint reloaded), up to 100 epochs; then
# the results table and the learning-curve figure (validation -ELBO and KL).
#
#   launch/ptb_convergence.sh PTB_DIR [RUNS_DIR] [--config.KEY=VALUE ...]
#
# PTB_DIR holds ptb.{train,valid,test}.txt (Mikolov's split). Rerunning the same
# command resumes both runs. Extra arguments go to both trainings, e.g.
# --config.train.epochs=30 to cap them (docs/RESULTS.md states the cap used).
set -euo pipefail
data=${1:?usage: launch/ptb_convergence.sh PTB_DIR [RUNS_DIR] [overrides...]}
runs=${2:-runs/ptb_convergence}
shift $(( $# >= 2 ? 2 : 1 ))
for method in vae bn_vae; do
  python -m bnvae_jax.main --config=configs/ptb.py --workdir="$runs/$method" \
    --config.method="$method" --config.model.gamma=0.6 --config.seed=783435 \
    --config.data.train_file="$data/ptb.train.txt" \
    --config.data.valid_file="$data/ptb.valid.txt" \
    --config.data.test_file="$data/ptb.test.txt" \
    --config.train.learning_rate=0.5 --config.eval.iw_samples=500 "$@"
done
python -m bnvae_jax.report "$runs"/*/results.json
python launch/curves.py --run=VAE="$runs/vae" --run="BN-VAE (γ=0.6)"="$runs/bn_vae" \
  --output="$runs/curves.png"
