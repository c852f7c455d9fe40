import time

import pytest

from loom.callbacks.training_time import TrainingTime


def test_time_between_two_fits_is_not_counted_and_a_checkpoints_count_goes_on():
    clock = TrainingTime()
    clock.start()
    time.sleep(0.05)
    clock.stop()
    counted = clock.seconds()
    time.sleep(0.2)  # between two fits
    assert clock.seconds() == counted
    clock.start()
    assert counted <= clock.seconds() < counted + 0.1
    resumed = TrainingTime()
    resumed.load_state_dict(clock.state_dict())
    assert resumed.seconds() >= counted
    with pytest.raises(ValueError, match=r"seconds=-1 must be a number >= 0"):
        resumed.load_state_dict({"seconds": -1})
