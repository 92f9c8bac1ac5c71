"""The train loop never waits for the device between two log points."""

import jax
import numpy as np
from conftest import tiny_config
from jax._src.array import ArrayImpl

from bnvae_jax.tasks import text_vae as train
from bnvae_jax.training import loop as loop_lib


class DeviceReads:
    """Counts reads of device values (``jax.Array._value``: int(), float(),
    bool(), jax.device_get) made outside the places that may read.

    A transfer guard would not do on CPU, where a read copies nothing; numpy's
    buffer protocol (np.asarray of a CPU array) is not seen either.
    """

    def __init__(self, monkeypatch):
        self.outside: list[tuple] = []
        self.depth = 0
        real = ArrayImpl._value

        def counted(array):
            if not self.depth:
                self.outside.append(array.shape)
            return real.fget(array)

        monkeypatch.setattr(ArrayImpl, "_value", property(counted))

    def allowed(self, fn, calls):
        """``fn`` allowed to read, its calls recorded."""

        def wrapped(*args, **kwargs):
            calls.append(args)
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1

        return wrapped


def test_no_device_to_host_transfer_between_log_points(tmp_path, monkeypatch):
    config = tiny_config(
        **{
            "train.epochs": 1,
            "train.log_every_steps": 4,
            "train.checkpoint_every_steps": 8,
        }
    )
    trainer, state = train.setup(config, str(tmp_path))
    state, loop = train.start(trainer, state)
    reads = DeviceReads(monkeypatch)
    flushes, saves, epochs = [], [], []
    # Reading the device is allowed only where the loop means to: flushing
    # metrics (log and checkpoint points), saving, and the end of the epoch.
    monkeypatch.setattr(loop_lib, "flush", reads.allowed(loop_lib.flush, flushes))
    monkeypatch.setattr(
        loop_lib, "save_latest", reads.allowed(loop_lib.save_latest, saves)
    )
    monkeypatch.setattr(
        loop_lib, "end_of_epoch", reads.allowed(loop_lib.end_of_epoch, epochs)
    )
    # The loop reads the step count once when it starts.
    final = loop_lib.train_epochs(
        trainer.ctx, state, loop, **loop_lib.task_fns(train, trainer)
    )
    assert reads.outside == [()]
    steps = int(final.step)
    assert steps == len(trainer.plan) > 8
    # Every 4 steps a flush, and nothing read in between.
    flushed_at = [args[3] for args in flushes]
    assert flushed_at[: steps // 4] == list(range(4, steps + 1, 4))
    assert len(saves) >= steps // 8 and len(epochs) == 1
    assert loop.epoch == 1 and loop.position == 0


def test_device_reads_are_counted(monkeypatch):
    # The test above relies on this: reading a value is seen, however it is read.
    reads = DeviceReads(monkeypatch)
    x = jax.numpy.ones((2,))
    int(x[0])
    bool(x[1] > 0)
    jax.device_get({"a": x * 2})
    assert len(reads.outside) == 3
    reads.allowed(lambda: float(x[1]), [])()
    assert len(reads.outside) == 3


def test_prefetch_places_one_batch_ahead():
    placed = []

    def place(item):
        placed.append(item)
        return item * 10

    seen = []
    for item, arrays in loop_lib.prefetch(range(4), place):
        # When item i is handed out, item i + 1 is already placed.
        seen.append((item, arrays, list(placed)))
    assert [s[:2] for s in seen] == [(i, 10 * i) for i in range(4)]
    assert [len(s[2]) for s in seen] == [2, 3, 4, 4]
    assert np.all(np.diff([s[0] for s in seen]) == 1)
