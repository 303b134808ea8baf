"""Print and write the benchmark table."""

from __future__ import annotations

import os
import platform
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from madsci_cache_rs.bench.timing import Row


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def _trips(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


HEADER = (
    "group",
    "operation",
    "ours",
    "reference",
    "speed-up",
    "round trips (ours / ref)",
    "reference is",
    "notes",
)


def table_rows(rows: Iterable[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.group,
            r.operation,
            _time(r.ours_s),
            _time(r.reference_s),
            f"{r.speedup:.1f}x",
            (
                f"{_trips(r.ours_round_trips)} / {_trips(r.reference_round_trips)}"
                if r.ours_round_trips is not None
                else ""
            ),
            r.reference_name,
            r.notes,
        )
        for r in rows
    ]


def text_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown CPU'} ({os.cpu_count()} cores)"


def environment() -> str:
    import importlib.metadata as md

    versions = []
    for dist in ("madsci-cache-rs", "madsci-common", "pottery", "redis", "pydantic"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return (
        f"Python {sys.version.split()[0]} on {platform.machine()} {platform.system()}, "
        f"{_cpu()}; " + ", ".join(versions)
    )


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(rows)]
    return "\n".join(lines)


def write_markdown(rows: list[Row], path: Path, command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"Measured by `{command}`.\n\n{environment()}\n\n{markdown_table(rows)}\n", encoding="utf-8"
    )


def write_chart(rows: list[Row], path: Path, title: str) -> bool:
    """A PNG of every row's speed-up on a log scale (1x marked), grouped and
    coloured by group. Returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = list(dict.fromkeys(r.group for r in rows))
    colours = plt.get_cmap("tab10")
    labels = [f"{r.group}: {r.operation}" for r in rows]
    height = max(4.0, 0.22 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    y = range(len(rows))
    ax.barh(
        y,
        [r.speedup for r in rows],
        color=[colours(groups.index(r.group) % 10) for r in rows],
    )
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over the reference (log scale; right of the line is faster)")
    ax.set_title("\n".join(textwrap.wrap(title, 130)), fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
