"""The paper's Table 1/8 on Yelp (the grid of paper_table1.py, five seeds).

    python -m bnvae_jax.sweep --config=configs/yelp.py \
      --grid=launch/grids/yelp_table1.py --out=runs/yelp_table1 \
      --config.data.train_file=yelp_data/yelp.train.txt \
      --config.data.valid_file=yelp_data/yelp.valid.txt \
      --config.data.test_file=yelp_data/yelp.test.txt
    python -m bnvae_jax.report runs/yelp_table1

The paper reports the mean over the seeds; the report adds the std.
"""

import pathlib
import runpy

_PAPER = runpy.run_path(str(pathlib.Path(__file__).with_name("paper_table1.py")))
SEEDS, sweep = _PAPER["SEEDS"], _PAPER["sweep"]
