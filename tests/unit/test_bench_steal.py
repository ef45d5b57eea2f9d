"""CPU steal share reported next to every benchmark phase (read from /proc/stat)."""

from __future__ import annotations

from pathlib import Path

from cli.bench import cpu_ticks, steal_share


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
