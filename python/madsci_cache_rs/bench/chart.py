"""The benchmark's charts (matplotlib, optional): speed-up bars that start at 1x
on a log axis, so a row where ours is slower reaches left of the 1x line.

* ``headline_figure``: the few rows a lab feels (engine tick, whole workflows,
  single operations, locks), one colour per kind with a legend;
* ``detail_figure``: every row, one panel per group, on a shared axis.

Both are plain ``matplotlib.figure.Figure`` objects (no pyplot state), about
900 px wide at their DPI so that labels stay readable at README width.
"""

from __future__ import annotations

import importlib.metadata
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madsci_cache_rs.bench.report import (
    LAB_GROUP,
    floor_note,
    format_ratio,
    format_time,
    group_views,
    headline,
)
from madsci_cache_rs.bench.timing import Row

FASTER, SLOWER = "#2a6fb0", "#d9822b"
# Colour-blind-safe, distinct from each other (Okabe-Ito).
KINDS = ("#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#d55e00")
DPI = 100
TIMES = "\N{MULTIPLICATION SIGN}"
# A detail panel's title wraps to stay within its axes (the labels take the rest).
TITLE_WRAP = 50
HEADLINE_PNG, DETAIL_PNG = "results.png", "results-detail.png"


def missing() -> str | None:
    """Why no chart can be drawn here (matplotlib is absent), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "missing package matplotlib (pip install matplotlib)"
    return None


def _limits(speedups: Sequence[float], right: float = 2.0) -> tuple[float, float]:
    finite = [s for s in speedups if 0 < s < float("inf")] or [1.0]
    # Room beyond the longest bars for their value labels.
    return min(0.5, min(finite) / 4), max(right, max(finite) * 4)


def _axis(ax: Any, limits: tuple[float, float], fontsize: float) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(*limits)
    # 1-2-5 ticks while they fit, decades beyond.
    decades = math.log10(limits[1] / limits[0])
    subs = (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{TIMES}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=fontsize)
    ax.axvline(1.0, color="black", linewidth=1.0, zorder=3)
    ax.grid(axis="x", which="major", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _bars(
    ax: Any,
    y: Sequence[float],
    speedups: Sequence[float],
    colours: Sequence[str],
    fontsize: float,
) -> None:
    """Bars from 1x to each speed-up, each labelled with its value at its end."""
    ax.barh(y, [s - 1.0 for s in speedups], left=1.0, color=colours, height=0.7, zorder=2)
    # A tick at each bar's end, so a bar of about 1x is still seen.
    ax.scatter(speedups, y, marker="|", s=(fontsize * 2) ** 2, c=colours, linewidths=2, zorder=3)
    for yi, s in zip(y, speedups, strict=True):
        faster = s >= 1.0
        ax.annotate(
            format_ratio(s).replace("x", TIMES),
            (s, yi),
            xytext=(3 if faster else -3, 0),
            textcoords="offset points",
            ha="left" if faster else "right",
            va="center",
            fontsize=fontsize,
        )


def _speedup(row: Row) -> float:
    """A drawn row's speed-up (the charts draw only rows with a reference)."""
    if row.speedup is None:
        raise ValueError(f"{row.operation!r} has no reference to draw a speed-up from")
    return row.speedup


def _madsci_version() -> str:
    try:
        return importlib.metadata.version("madsci-common")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def headline_figure(rows: list[Row], env: str) -> Any:
    """The headline rows in one panel, or None when none of them were measured."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    picked = headline(rows)
    if not picked:
        return None
    kinds = list(dict.fromkeys(kind for kind, _, _ in picked))
    y, position, previous = [], 0.0, picked[0][0]
    for kind, _, _ in picked:
        if kind != previous:
            position += 0.6  # a gap between kinds
            previous = kind
        y.append(position)
        position += 1.0
    speedups = [_speedup(r) for _, _, r in picked]

    fig = Figure(figsize=(9, 0.34 * len(picked) + 2.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _axis(ax, _limits(speedups), 9)
    colours = [KINDS[kinds.index(kind) % len(KINDS)] for kind, _, _ in picked]
    _bars(ax, y, speedups, colours, 9)
    ax.set_yticks(y, [label for _, label, _ in picked], fontsize=9.5)
    ax.set_ylim(position - 0.4, -0.6)
    # The round trips beside each bar, in a column right of the plot.
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for yi, (_, _, row) in zip(y, picked, strict=True):
        detail = _headline_detail(row)
        ax.text(1.01, yi, detail, transform=right, va="center", fontsize=8, color="#333333")
    ax.set_xlabel(
        f"speed-up = madsci's time / ours (log scale; bars start at 1{TIMES}, "
        "left of it ours is slower)",
        fontsize=9,
    )
    fig.suptitle(
        f"madsci-cache-rs vs madsci {_madsci_version()}'s cache handler on redis-py + pottery"
        "\nsame server, same run, timed in alternating rounds",
        fontsize=11.5,
    )
    ax.set_title("\n".join(textwrap.wrap(env, 130)), fontsize=7, color="#555555")
    handles = [Patch(color=KINDS[i % len(KINDS)], label=kind) for i, kind in enumerate(kinds)]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return fig


def _headline_detail(row: Row) -> str:
    """Times, and round trips where counted: ours first."""
    assert row.reference_s is not None  # headline() picks only rows with a reference
    lines = [f"{format_time(row.ours_s)} vs {format_time(row.reference_s)}"]
    if row.ours_round_trips is not None:
        what = "server commands" if row.group == LAB_GROUP else "round trips"
        lines.append(f"{row.ours_round_trips:g} vs {row.reference_round_trips:g} {what}")
    floor = floor_note(row)
    if floor:
        lines[-1] += f"; {floor}"
    return "\n".join(lines)


def detail_figure(rows: list[Row], env: str) -> Any:
    """Every row with a reference: one panel per group, panels in two columns
    balanced by height (a row the reference cannot do has no speed-up to draw:
    the tables show it)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = [r for r in rows if r.reference_s is not None]

    views = group_views(rows)
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    labels = {v.name: [textwrap.fill(r.operation, 40) for r in by_group[v.name]] for v in views}
    # Inches per panel: a line per label line, plus the panel's title and axis.
    heights = [
        0.19 * sum(lbl.count("\n") + 1 for lbl in labels[v.name])
        + 0.55
        + 0.16 * (len(f"{v.name}: ours vs {v.reference}") // TITLE_WRAP + 1)
        for v in views
    ]
    split = len(views)
    if len(views) > 3:
        split = min(range(1, len(views)), key=lambda k: max(sum(heights[:k]), sum(heights[k:])))
    columns = [c for c in (views[:split], views[split:]) if c]
    column_heights = [heights[:split], heights[split:]]
    fig = Figure(
        figsize=(6.5 * len(columns), max(map(sum, column_heights)) + 1.3),
        dpi=DPI,
        layout="constrained",
    )
    subfigs = fig.subfigures(1, len(columns), squeeze=False)[0]
    for sub, column, ratios in zip(subfigs, columns, column_heights, strict=False):
        axes = sub.subplots(len(column), 1, height_ratios=ratios, squeeze=False)[:, 0]
        for ax, view in zip(axes, column, strict=True):
            members = by_group[view.name]
            speedups = [_speedup(r) for r in members]
            # Each panel its own range (at least 0.5x to 20x): shared, the in-memory
            # rows' few-x bars would be slivers beside the list rows' thousand-x.
            _axis(ax, _limits(speedups, right=20.0), 8)
            y = list(range(len(members)))
            _bars(ax, y, speedups, [FASTER if s >= 1 else SLOWER for s in speedups], 8)
            ax.set_yticks(y, labels[view.name], fontsize=8.5)
            ax.set_ylim(len(members) - 0.5, -0.5)
            ax.set_title(
                textwrap.fill(f"{view.name}: ours vs {view.reference}", TITLE_WRAP),
                loc="left",
                fontsize=9,
                fontweight="bold",
            )
    fig.suptitle(
        "madsci-cache-rs vs the reference, every row (speed-up = reference time / ours, "
        f"log scale, bars from 1{TIMES})\n" + "\n".join(textwrap.wrap(env, 170)),
        fontsize=10,
    )
    fig.legend(
        handles=[
            Patch(color=FASTER, label="ours faster"),
            Patch(color=SLOWER, label="ours slower"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize=9,
        frameon=False,
    )
    return fig


def write_charts(rows: list[Row], out: Path, env: str) -> list[Path]:
    """Draw the charts into ``out``; the paths written (no headline chart when
    none of its rows ran)."""
    written = []
    for name, build in ((HEADLINE_PNG, headline_figure), (DETAIL_PNG, detail_figure)):
        fig = build(rows, env) if any(r.reference_s is not None for r in rows) else None
        target = out / name
        if fig is None:
            target.unlink(missing_ok=True)  # not a stale chart from an earlier run
            continue
        fig.savefig(target, dpi=DPI)
        written.append(target)
    return written
