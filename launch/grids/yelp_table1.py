"""The paper's Table 1/8 on Yelp (the grid of paper_table1.py, five seeds).

    python launch/sweep.py --config=configs/yelp.py \
      --grid=launch/grids/yelp_table1.py --out=runs/yelp_table1 \
      --config.data.train_file=yelp_data/yelp.train.txt \
      --config.data.valid_file=yelp_data/yelp.valid.txt \
      --config.data.test_file=yelp_data/yelp.test.txt
    python launch/report.py runs/yelp_table1

The paper reports the mean over the seeds; report.py adds the std.
"""

import pathlib
import runpy


def _paper() -> dict:
    return runpy.run_path(str(pathlib.Path(__file__).with_name("paper_table1.py")))


def get_seeds() -> list[int]:
    return _paper()["get_seeds"]()


def get_grid() -> list[dict]:
    return _paper()["get_grid"]()
