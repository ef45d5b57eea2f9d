"""``veil bench``'s arithmetic: a phase's figures from its latencies, the order of the phases in a round,
which rounds count (the steal rule) and the medians over them. Pure functions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phase:
    images: int
    seconds: float
    img_per_s: float
    p50_ms: float
    p95_ms: float
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(latencies_s: Sequence[float], seconds: float, failed: int = 0) -> Phase:
    count = len(latencies_s)
    return Phase(
        images=count,
        seconds=round(seconds, 2),
        img_per_s=round(count / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=round(statistics.median(latencies_s) * 1000, 1) if latencies_s else 0.0,
        p95_ms=round(percentile(latencies_s, 95) * 1000, 1),
        failed=failed,
    )


def phase_order(number: int) -> tuple[str, str]:
    """(a) then (b) in odd rounds, (b) then (a) in even ones: the host's speed drifts over minutes, and a
    fixed order would hand that drift to one phase every round (in pairs of rounds it cancels)."""
    return ("a", "b") if number % 2 else ("b", "a")


def counted_rounds(per_round: list[dict[str, float]], max_steal: float) -> list[dict[str, float]]:
    """The rounds the medians are taken over: those in which neither phase lost more than ``max_steal`` of
    the CPU to the hypervisor, or all of them when none stayed under it. Steal that hits one phase and not
    the other moves the ratio either way (0.3 to 1.3 seen here), so such rounds tell nothing about it."""
    quiet = [r for r in per_round if max(r.get("steal_a", 0.0), r.get("steal_b", 0.0)) <= max_steal]
    return quiet or per_round


def round_ratio(this: dict[str, float]) -> None:
    """A round's ratio (b)/(a), where both phases ran in it."""
    if this.get("model_only") and this.get("end_to_end"):
        this["ratio"] = round(this["end_to_end"] / this["model_only"], 3)


def medians(per_round: list[dict[str, float]], max_steal: float) -> dict[str, Any]:
    """What the report says over the rounds. With more than one round: the rounds, how many count, the
    steal limit and each phase's median img/s over the counted rounds (``img_per_s``); with any ratio: the
    median ratio of the counted rounds and of all of them."""
    summary: dict[str, Any] = {}
    counted = per_round
    if len(per_round) > 1:
        counted = counted_rounds(per_round, max_steal)
        summary.update(rounds=per_round, rounds_counted=len(counted), max_steal=max_steal)
        summary["img_per_s"] = {
            key: round(statistics.median(r[key] for r in counted), 2)
            for key in ("model_only", "end_to_end")
            if all(key in r for r in counted)
        }
    ratios = [r["ratio"] for r in counted if "ratio" in r]
    if ratios:
        summary["ratio"] = round(statistics.median(ratios), 3)
        every = [r["ratio"] for r in per_round if "ratio" in r]
        summary["ratio_all_rounds"] = round(statistics.median(every), 3)
    return summary
