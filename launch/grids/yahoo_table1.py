"""The paper's Table 1/8 on Yahoo (the grid of paper_table1.py, five seeds).

    python launch/sweep.py --config=configs/yahoo.py \
      --grid=launch/grids/yahoo_table1.py --out=runs/yahoo_table1 \
      --config.data.train_file=yahoo_data/yahoo.train.txt \
      --config.data.valid_file=yahoo_data/yahoo.valid.txt \
      --config.data.test_file=yahoo_data/yahoo.test.txt
    python launch/report.py runs/yahoo_table1

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
