#!/usr/bin/env bash
# CPU quality run of paper Table 4 (CVAE, CVAE+BOW, BN-CVAE) on the 60 public
# Switchboard validation dialogs of Zhao et al.: dialogs 1-48 train, 49-54
# validate, 55-60 test. By default model sizes and steps are scaled down to fit
# ~10 min a method on two shared CPU cores; SIZES=zhao keeps Zhao et al.'s sizes
# (configs/switchboard.py) and trains up to 2,000 steps with the KL weight
# reaching 1 after 500 (~40 min a method here). See docs/RESULTS.md.
#
#   launch/switchboard_quality.sh SWDA/valid.jsonl \
#     GLOVE/glove.twitter.27B.25d.txt runs/swda_quality [--config.KEY=VALUE ...]
#   SIZES=zhao launch/switchboard_quality.sh SWDA/valid.jsonl GLOVE/... runs/swda_zhao
#
# Rerun the same command to resume (finished methods are skipped by the loop).
# SWDA: Zhao et al.'s Switchboard JSONL files; GLOVE: GloVe Twitter vectors (a
# subset of the most frequent words is enough). Arguments after the third are
# passed to every run and override the settings below (e.g. a short check:
# --config.train.max_steps=20).
set -euo pipefail
DIALOGS=${1:?path to valid.jsonl}
GLOVE=${2:?path to a GloVe text file}
OUT=${3:-runs/swda_quality}
shift $(( $# < 3 ? $# : 3 ))
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/data"
head -n 48 "$DIALOGS" > "$OUT/data/train.jsonl"
sed -n 49,54p "$DIALOGS" > "$OUT/data/valid.jsonl"
sed -n 55,60p "$DIALOGS" > "$OUT/data/test.jsonl"
if [ "${SIZES:-cpu}" = zhao ]; then
  LIMIT=0  # no time limit
  SIZE_ARGS=(--config.train.max_steps=2000 --config.train.full_kl_steps=500
    --config.train.checkpoint_every_steps=250)
else
  LIMIT=1500
  SIZE_ARGS=(--config.data.max_utt_len=30 --config.data.context_size=6
    --config.model.emb_dim=64 --config.model.utt_hidden=64
    --config.model.ctx_hidden=128 --config.model.dec_hidden=128
    --config.model.latent_dim=32 --config.model.prior_hidden=64
    --config.model.bow_hidden=64
    --config.train.max_steps=1000 --config.train.steps_per_epoch=150
    --config.train.full_kl_steps=300 --config.train.log_every_steps=50
    --config.train.checkpoint_every_steps=250)
fi
for METHOD in ${METHODS:-cvae cvae_bow bn_cvae}; do
  nice -n 10 timeout "$LIMIT" "$PYTHON" -m bnvae_jax.main \
    --config=configs/switchboard.py --config.method="$METHOD" \
    --workdir="$OUT/$METHOD" \
    --config.data.train_file="$OUT/data/train.jsonl" \
    --config.data.valid_file="$OUT/data/valid.jsonl" \
    --config.data.test_file="$OUT/data/test.jsonl" \
    --config.eval.glove_file="$GLOVE" \
    "${SIZE_ARGS[@]}" "$@" 2>"$OUT/$METHOD.log"
done
# Table 4 layout: PPL, KL, BLEU-1..4 and bow scores (x 100) of each method.
"$PYTHON" - "$OUT" ${METHODS:-cvae cvae_bow bn_cvae} <<'PY'
import json, pathlib, sys
out, methods = pathlib.Path(sys.argv[1]), sys.argv[2:]
keys = ["ppl", "kl"] + [f"bleu{k}_{s}" for k in (1, 2, 3, 4) for s in ("precision", "recall")]
keys += [f"{m}_{s}" for m in ("abow", "ebow") for s in ("precision", "recall")]
print("| metric | " + " | ".join(methods) + " |")
print("|---" * (len(methods) + 1) + "|")
results = {m: json.loads((out / m / "results.json").read_text())["test"] for m in methods}
for key in keys:
    scale = 1.0 if key in ("ppl", "kl") else 100.0
    print(f"| {key} | " + " | ".join(f"{results[m][key] * scale:.2f}" for m in methods) + " |")
PY
