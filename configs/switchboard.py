"""Dialog CVAEs on Zhao et al.'s Switchboard (paper §5.2, Table 4); Zhao's sizes.

    python -m bnvae_jax.main --config=configs/switchboard.py \
      --config.method=bn_cvae --workdir=runs/swda_bn_cvae \
      --config.data.train_file=train.jsonl \
      --config.data.valid_file=valid.jsonl \
      --config.data.test_file=test.jsonl \
      --config.eval.glove_file=glove.twitter.27B.200d.txt \
      --config.model.embedding_file=glove.twitter.27B.200d.txt

Methods: cvae, cvae_bow, bn_cvae. Paper (full Switchboard, GPU): KL 0.15 / 9.30 /
5.18; CPU-sized runs on the 60 public validation dialogs: docs/RESULTS.md.
"""

from bnvae_jax.tasks.dialog import config


def get_config():
    return config.default_config()
