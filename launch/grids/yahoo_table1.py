"""The paper's Table 1/8 on Yahoo (the grid of paper_table1.py, five seeds).

    python -m bnvae_jax.sweep --config=configs/yahoo.py \
      --grid=launch/grids/yahoo_table1.py --out=runs/yahoo_table1 \
      --config.data.train_file=yahoo_data/yahoo.train.txt \
      --config.data.valid_file=yahoo_data/yahoo.valid.txt \
      --config.data.test_file=yahoo_data/yahoo.test.txt
    python -m bnvae_jax.report runs/yahoo_table1

The paper reports the mean over the seeds; the report adds the std.
"""

import pathlib
import runpy

_PAPER = runpy.run_path(str(pathlib.Path(__file__).with_name("paper_table1.py")))
SEEDS, sweep = _PAPER["SEEDS"], _PAPER["sweep"]
