"""Python's cyclic garbage collector in a long-running server process.

Everything built at start-up (modules, settings, clients, the models' sessions) lives until exit, yet every
full collection walks all of it again: in the gateway that was ~7 % of its CPU under load (perf). Freezing
what exists once start-up is done leaves collections only the objects that requests and jobs create.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect once, then move every surviving object out of the collector's view; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
