"""Freezing start-up objects takes them out of the collector's view without breaking later collections."""

from __future__ import annotations

import gc

from shared.gcfreeze import freeze_startup_objects


def test_freeze_counts_and_later_garbage_is_still_collected() -> None:
    try:
        frozen = freeze_startup_objects()
        # >=: a server another test started in this process may freeze its own start-up meanwhile.
        assert gc.get_freeze_count() >= frozen > 0

        class Node:
            other: object = None

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle created after the freeze
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
