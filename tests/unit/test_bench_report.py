"""``veil bench``'s text report from a report as ``--json`` prints it."""

from __future__ import annotations

from typing import Any

import pytest

from cli.bench_report import print_report, service_cpu


def _phase(extra: dict[str, Any]) -> dict[str, Any]:
    return {"images": 3, "seconds": 1.25, "img_per_s": 2.4, "p50_ms": 410.5, "p95_ms": 600.0, "failed": 1} | {
        "extra": extra
    }


MODEL = {
    "plan": {"lanes": 2},
    "providers": ["CPUExecutionProvider"],
    "rss_mb": 800.0,
    "stage_p50_ms": {"decode": 5.0},
    "stage_share": {"decode": 0.1},
    "cpu_ms_per_photo": {"bench": 250.0, "machine busy": 260.0, "machine idle": 3.0},
    "cpu_steal": 0.02,
}
SERVICE = {
    "concurrency": 2,
    "wait_s": 30.0,
    "worker_p50_ms": 300.0,
    "failures": ["x.jpg: boom"],
    "cpu_ms_per_photo": {"worker": 250.0, "gateway": 6.0, "bench": 2.0, "machine busy": 290.5},
    "cpu_steal": None,
}
REPORT = {
    "date": "2026-11-30 10:00:00 +0000",
    "images": 3,
    "targets": ["faces", "plates"],
    "machine_before": {"cores": 2, "loadavg": [1.0, 2.0, 3.0]},
    "machine_after": {"cores": 2, "loadavg": [1.5, 2.0, 3.0]},
    "model_only": _phase(MODEL),
    "end_to_end": _phase(SERVICE),
    "ratio": 0.87,
    "ratio_all_rounds": 0.85,
    "workers": [{"id": "w1", "providers": ["CPUExecutionProvider"], "runtime": {"lanes": 2}, "rss_bytes": 1}],
    "worker_rss_mb": [1000.0],
}


def test_every_figure_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    print_report(REPORT)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "2026-11-30 10:00:00 +0000  3 images  targets=faces,plates",
        "machine: 2 cores, loadavg before [1.0, 2.0, 3.0] after [1.5, 2.0, 3.0]",
    ]
    figures = "2.40 img/s  p50    410.5 ms  p95    600.0 ms  (3 ok, 1 failed, 1.25 s"
    assert f"(a) model-only      {figures}, CPU steal 2%)" in lines
    assert "    CPU per photo, ms: bench (the model loop) 250 · machine busy 260 · machine idle 3" in lines
    assert (
        "(b) end-to-end      2.40 img/s  p50    410.5 ms  p95    600.0 ms  (3 ok, 1 failed, 1.25 s)" in lines
    )
    assert "    concurrency 2, server-side wait 30 s, worker time p50 300.0 ms" in lines
    assert "    failure: x.jpg: boom" in lines
    assert (
        "    CPU per photo, ms: worker 250 · gateway 6 · bench (load generator) 2 · machine busy 290.5"
        in lines
    )
    assert (
        "the service around the models: 30.5 ms of CPU per photo "
        "((b)'s machine busy minus (a)'s; the ratio is about (a)'s over (b)'s)"
    ) in lines
    assert "worker w1: providers ['CPUExecutionProvider'] runtime {'lanes': 2}" in lines
    assert "worker RSS: [1000.0] MB" in lines
    assert lines[-1] == "ratio (b)/(a): 0.87"


@pytest.mark.parametrize(
    ("counted", "line"),
    [
        (1, "ratio (b)/(a): median of 1 of 2 rounds with steal ≤ 5%: 0.87 (of all rounds: 0.85)"),
        (2, "ratio (b)/(a): median of all 2 rounds: 0.87 (of all rounds: 0.85)"),
    ],
)
def test_rounds_and_their_medians(capsys: pytest.CaptureFixture[str], counted: int, line: str) -> None:
    rounds = [{"model_only": 2.0, "ratio": 0.8}, {"model_only": 2.1, "ratio": 0.9}]
    print_report({**REPORT, "rounds": rounds, "rounds_counted": counted, "max_steal": 0.05})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == [f"round 1: {rounds[0]}", f"round 2: {rounds[1]}", line]


def test_service_cpu_needs_both_phases() -> None:
    assert service_cpu(REPORT) == 30.5
    assert service_cpu({"end_to_end": REPORT["end_to_end"]}) is None
