import threading
import time

import pytest

from napari_semietpicker.training.prefetch import Prefetcher


def test_items_come_in_step_order_and_are_made_ahead():
    made = []

    def make(step: int) -> int:
        made.append(step)
        return step * step

    with Prefetcher(make, first_step=5, depth=2) as batches:
        assert [batches.get(step) for step in range(5, 10)] == [25, 36, 49, 64, 81]
        deadline = time.monotonic() + 5
        while len(made) < 7 and time.monotonic() < deadline:  # 2 queued + 1 being put
            time.sleep(0.01)
        assert made[:7] == list(range(5, 12))
        with pytest.raises(ValueError, match="expected step 10, was asked for 12"):
            batches.get(12)


def test_an_error_in_make_is_raised_at_its_step_in_the_caller():
    def make(step: int) -> int:
        if step == 2:
            raise RuntimeError("no crop at step 2")
        return step

    with Prefetcher(make, first_step=0) as batches:
        assert batches.get(0) == 0 and batches.get(1) == 1
        with pytest.raises(RuntimeError, match="no crop at step 2"):
            batches.get(2)


def test_close_stops_the_thread_while_it_waits_on_a_full_queue():
    batches = Prefetcher(lambda step: step, first_step=0, depth=1)
    time.sleep(0.05)
    batches.close()
    assert not any(t.name == "semietpicker-prefetch" and t.is_alive()
                   for t in threading.enumerate())


def test_depth_zero_makes_each_item_when_asked_without_a_thread():
    made = []

    def make(step: int) -> int:
        made.append(step)
        return -step

    before = threading.active_count()
    with Prefetcher(make, first_step=3, depth=0) as batches:
        assert threading.active_count() == before and made == []
        assert batches.get(3) == -3 and made == [3]
        assert batches.get(4) == -4 and made == [3, 4]
