#!/usr/bin/env bash
# The few-label classification quality run of docs/RESULTS.md (paper Table 3,
# downscaled to a shared 2-core CPU): VAE and BN-VAE (gamma 0.7) on Shen et al.'s
# Yelp sentiment sentences, then the classifier table for both.
#
# Usage: launch/yelp_classify.sh SHEN_DIR [RUNS_DIR]
# Environment: TRAIN_SENTENCES (16000), EPOCHS (2), HIDDEN (512, the paper's
# short_yelp size), SEEDS (10), LABELS (100,500,1000,2000,10000).
#
# SHEN_DIR holds sentiment.dev.0 (negative) and sentiment.dev.1 (positive); only
# the dev files exist on these machines, so they are split here (seeded): 10,000
# test and 3,000 validation sentences held out from everything else; the rest is
# the labelled pool the classifier draws from, and its first TRAIN_SENTENCES
# sentences train the VAEs (labels ignored).
set -euo pipefail
shen=${1:?usage: launch/yelp_classify.sh SHEN_DIR [RUNS_DIR]}
runs=${2:-runs/yelp_classify}
data="$runs/data"
mkdir -p "$data"

python - "$shen" "$data" "${TRAIN_SENTENCES:-16000}" <<'PY'
"""Seeded split of Shen's labelled sentences into LABEL<TAB>TEXT files."""
import pathlib
import sys

import numpy as np

shen, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
num_train = int(sys.argv[3])
lines = []
for label in ("0", "1"):
    text = (shen / f"sentiment.dev.{label}").read_text(encoding="utf-8")
    lines += [f"{label}\t{s.strip()}" for s in text.splitlines() if s.split()]
order = np.random.default_rng(20200701).permutation(len(lines))
num_test, num_valid = 10000, 3000
parts = {
    "test": order[:num_test],
    "valid": order[num_test : num_test + num_valid],
    "pool": order[num_test + num_valid :],
}
parts["train"] = parts["pool"][:num_train]
for split, idx in parts.items():
    body = "".join(lines[i] + "\n" for i in idx)
    (out / f"short_yelp.{split}.txt").write_text(body, encoding="utf-8")
    print(split, len(idx))
PY

# Both trainings at once: on a shared machine two niced processes get through
# sooner than one after the other.
for method in vae bn_vae; do
  python -m bnvae_jax.main --config=configs/short_yelp.py --workdir="$runs/$method" \
    --config.method="$method" --config.model.gamma=0.7 --config.seed=783435 \
    --config.model.enc_hidden="${HIDDEN:-512}" --config.model.dec_hidden="${HIDDEN:-512}" \
    --config.data.train_file="$data/short_yelp.train.txt" \
    --config.data.valid_file="$data/short_yelp.valid.txt" \
    --config.data.test_file="$data/short_yelp.test.txt" \
    --config.train.epochs="${EPOCHS:-2}" --config.train.kl_warmup_epochs=1 \
    --config.eval.iw_samples=20 --config.eval.iw_max_sentences=100 \
    > "$runs/$method.log" 2>&1 &
done
wait

for method in vae bn_vae; do
  python -m bnvae_jax.classify --workdir="$runs/$method" \
    --train_file="$data/short_yelp.pool.txt" \
    --valid_file="$data/short_yelp.valid.txt" \
    --test_file="$data/short_yelp.test.txt" \
    --labels="${LABELS:-100,500,1000,2000,10000}" --seeds="${SEEDS:-10}" \
    --mode=frozen  # the table of docs/RESULTS.md (classify's default fine-tunes)
done
python - "$runs" <<'PY'
"""Both runs' tables as one."""
import pathlib
import sys

runs = pathlib.Path(sys.argv[1])
rows = [(runs / m / "classification.md").read_text().splitlines() for m in ("vae", "bn_vae")]
print("\n".join(rows[0] + rows[1][2:]))
PY
