"""``veil bench``'s text report: the JSON report (as ``--json`` prints it) in lines a person reads."""

from __future__ import annotations

from typing import Any

import click

from cli import cpuuse


def _cpu_line(cpu: dict[str, float], phase: str) -> str:
    """One phase's CPU per photo by role, as ``name value`` pairs, for the text report."""
    names = {"bench": "bench (the model loop)" if phase == "model_only" else "bench (load generator)"}
    parts = [f"{names.get(name, name)} {ms:g}" for name, ms in cpu.items()]
    return " · ".join(parts)


def service_cpu(report: dict[str, Any]) -> float | None:
    """(b)'s machine-wide CPU per photo minus (a)'s: what the service adds around the models."""
    try:
        busy_b = float(report["end_to_end"]["extra"]["cpu_ms_per_photo"][cpuuse.MACHINE_BUSY])
        busy_a = float(report["model_only"]["extra"]["cpu_ms_per_photo"][cpuuse.MACHINE_BUSY])
    except KeyError:
        return None
    return round(busy_b - busy_a, 1)


def _phase_lines(key: str, title: str, phase: dict[str, Any]) -> None:
    extra = phase.get("extra", {})
    steal = extra.get("cpu_steal")
    click.echo(
        f"{title:16} {phase['img_per_s']:7.2f} img/s  p50 {phase['p50_ms']:8.1f} ms  "
        f"p95 {phase['p95_ms']:8.1f} ms  ({phase['images']} ok, {phase['failed']} failed, "
        f"{phase['seconds']} s{'' if steal is None else f', CPU steal {steal:.0%}'})"
    )
    if key == "model_only":
        click.echo(f"    providers: {', '.join(extra['providers'])}  plan: {extra['plan']}")
        click.echo(f"    stages p50 ms: {extra['stage_p50_ms']}  share of time: {extra['stage_share']}")
        click.echo(f"    bench process RSS: {extra['rss_mb']} MB")
    else:
        click.echo(
            f"    concurrency {extra['concurrency']}, server-side wait {extra['wait_s']:g} s, "
            f"worker time p50 {extra['worker_p50_ms']} ms"
        )
        for failure in extra.get("failures", []):
            click.echo(f"    failure: {failure}")
    if extra.get("cpu_ms_per_photo"):
        click.echo(f"    CPU per photo, ms: {_cpu_line(extra['cpu_ms_per_photo'], key)}")


def _ratio_line(report: dict[str, Any]) -> str:
    if "rounds" not in report:
        return f"ratio (b)/(a): {report['ratio']}"
    counted_n, all_n = report["rounds_counted"], len(report["rounds"])
    which = (
        f"{counted_n} of {all_n} rounds with steal ≤ {report['max_steal']:.0%}"
        if counted_n < all_n
        else f"all {all_n} rounds"
    )
    return (
        f"ratio (b)/(a): median of {which}: {report['ratio']} (of all rounds: {report['ratio_all_rounds']})"
    )


def print_report(report: dict[str, Any]) -> None:
    click.echo(f"\n{report['date']}  {report['images']} images  targets={','.join(report['targets'])}")
    before, after = report["machine_before"], report.get("machine_after", {})
    click.echo(
        f"machine: {before['cores']} cores, loadavg before {before['loadavg']} after {after.get('loadavg')}"
    )
    for key, title in (("model_only", "(a) model-only"), ("end_to_end", "(b) end-to-end")):
        if report.get(key):
            _phase_lines(key, title, report[key])
    around = service_cpu(report)
    if around is not None:
        click.echo(
            f"the service around the models: {around} ms of CPU per photo "
            "((b)'s machine busy minus (a)'s; the ratio is about (a)'s over (b)'s)"
        )
    for worker in report.get("workers", []):
        click.echo(f"worker {worker['id']}: providers {worker['providers']} runtime {worker['runtime']}")
    if "worker_rss_mb" in report:
        click.echo(f"worker RSS: {report['worker_rss_mb']} MB")
    for number, this in enumerate(report.get("rounds", []), start=1):
        click.echo(f"round {number}: {this}")
    if "ratio" in report:
        click.echo(_ratio_line(report))
