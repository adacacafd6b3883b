"""The collector settings the twistd plugin applies once the gateway is ready."""

from __future__ import annotations

import gc

from gateway.app.gc_policy import THRESHOLDS, tune_garbage_collector
from gateway.sip.responses import new_tag


def test_tuning_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    old = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > old[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


def test_tags_are_random_hex_and_do_not_repeat() -> None:
    tags = [new_tag() for _ in range(5000)]  # crosses several refills of the pool
    assert len(set(tags)) == len(tags)
    assert all(len(tag) == 12 and int(tag, 16) >= 0 for tag in tags)
