"""CPU steal share reported next to every benchmark phase (from the machine's CPU time counters)."""

from __future__ import annotations

from cli.bench_stats import counted_rounds, medians, phase_order
from cli.cpuuse import MACHINE_FIELDS, machine_times, steal_share


def _times(*values: float) -> dict[str, float]:
    """Counters in /proc/stat's order: user nice system idle iowait irq softirq steal."""
    return dict(zip(MACHINE_FIELDS, values, strict=True))


def test_steal_share_of_the_interval() -> None:
    before = _times(100, 0, 20, 500, 0, 0, 0, 80)
    after = _times(150, 0, 30, 540, 0, 0, 0, 180)  # 200 s passed, 100 of them stolen
    assert steal_share(before, after) == 0.5
    assert steal_share(None, after) is None
    assert steal_share(before, before) is None
    # A platform without a steal counter tells nothing about it.
    no_steal = {name: value for name, value in before.items() if name != "steal"}
    assert steal_share(no_steal, {**no_steal, "user": 200.0}) is None


def test_guest_time_is_not_counted_twice() -> None:
    # Linux counts guest time inside user time; psutil reports both, the share sums user .. steal only.
    before = {**_times(100, 0, 20, 500, 0, 0, 0, 80), "guest": 10.0}
    after = {**_times(150, 0, 30, 540, 0, 0, 0, 180), "guest": 60.0}
    assert steal_share(before, after) == 0.5


def test_this_machine_has_counters() -> None:
    times = machine_times()
    assert set(times) <= set(MACHINE_FIELDS) and {"user", "system", "idle"} <= set(times)
    assert all(v >= 0 for v in times.values())


def test_medians_leave_out_rounds_with_steal_while_quiet_ones_exist() -> None:
    rounds = [
        {"model_only": 5.0, "steal_a": 0.25, "end_to_end": 1.6, "steal_b": 0.71, "ratio": 0.32},
        {"model_only": 7.2, "steal_a": 0.02, "end_to_end": 6.5, "steal_b": 0.01, "ratio": 0.90},
        {"model_only": 7.0, "steal_a": 0.01, "end_to_end": 5.2, "steal_b": 0.12, "ratio": 0.75},
        {"model_only": 7.3, "steal_a": 0.0, "end_to_end": 6.6, "steal_b": 0.02, "ratio": 0.90},
    ]
    assert counted_rounds(rounds, 0.05) == [rounds[1], rounds[3]]
    assert counted_rounds(rounds, 1.0) == rounds
    # No quiet round at all: every round counts rather than none.
    assert counted_rounds(rounds[:1], 0.05) == rounds[:1]
    # Off Linux there is no steal figure: rounds count.
    assert counted_rounds([{"model_only": 1.0, "ratio": 0.8}], 0.05) == [{"model_only": 1.0, "ratio": 0.8}]

    summary = medians(rounds, 0.05)
    assert summary["rounds"] == rounds and summary["rounds_counted"] == 2 and summary["max_steal"] == 0.05
    assert summary["img_per_s"] == {"model_only": 7.25, "end_to_end": 6.55}
    assert summary["ratio"] == 0.9 and summary["ratio_all_rounds"] == 0.825


def test_one_round_is_its_own_median() -> None:
    assert medians([{"model_only": 7.0, "end_to_end": 6.0, "ratio": 0.857}], 0.05) == {
        "ratio": 0.857,
        "ratio_all_rounds": 0.857,
    }
    assert medians([{"model_only": 7.0}], 0.05) == {}  # (a) alone: no ratio


def test_phases_alternate_their_order_so_drift_cancels_in_pairs_of_rounds() -> None:
    assert [phase_order(n) for n in (1, 2, 3, 4)] == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
