"""Freezing start-up objects takes them out of the collector's view without breaking later collections."""

from __future__ import annotations

import gc

from shared.gcfreeze import freeze_startup_objects


def test_freeze_counts_and_later_garbage_is_still_collected() -> None:
    try:
        frozen = freeze_startup_objects()
        # Not equal: other threads of the test process free frozen objects and freeze their own meanwhile.
        assert frozen > 0 and gc.get_freeze_count() > 0

        class Node:
            other: object = None

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle created after the freeze
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
