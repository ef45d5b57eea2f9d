"""CPU steal share reported next to every benchmark phase (read from /proc/stat)."""

from __future__ import annotations

from pathlib import Path

from cli.bench import counted_rounds, phase_order, steal_share
from cli.cpuuse import cpu_ticks


def test_cpu_ticks_reads_the_first_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 500 5 0 3 72 0 0\ncpu0 50 0 10 250 2 0 1 36 0 0\n")
    assert cpu_ticks(stat) == [100, 0, 20, 500, 5, 0, 3, 72]
    assert cpu_ticks(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert cpu_ticks(tmp_path / "odd") is None


def test_steal_share_of_the_interval() -> None:
    before = [100, 0, 20, 500, 0, 0, 0, 80]
    after = [150, 0, 30, 540, 0, 0, 0, 180]  # 200 ticks passed, 100 of them stolen
    assert steal_share(before, after) == 0.5
    assert steal_share(None, after) is None
    assert steal_share(before, before) is None


def test_this_machine_has_counters_or_none() -> None:
    ticks = cpu_ticks()
    assert ticks is None or (len(ticks) == 8 and all(v >= 0 for v in ticks))


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


def test_phases_alternate_their_order_so_drift_cancels_in_pairs_of_rounds() -> None:
    assert [phase_order(n) for n in (1, 2, 3, 4)] == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
