"""The benchmark's tables: grouped, with the reference named once per group.

Every group gets a heading naming what "reference" means in it, then one line
per operation (ours, reference, speed-up, round trips), then its notes below:
a note every row shares once, the others as numbered footnotes. The text
table fits ``WIDTH`` columns whatever the row set (long operation names
wrap), so it reads in a 120-column terminal.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from madsci_cache_rs.bench.timing import Row

WIDTH = 120
INDENT = "  "
TRIPS_HEADER = "round trips"
LAB_GROUP = "lab end to end (madsci managers, healthy server)"


def format_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def format_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:.0f}x"
    # Two significant digits below 1x (0.56x, 0.0005x); 0.995 and up reads 1.0x.
    return f"{ratio:.1f}x" if ratio >= 0.995 else f"{ratio:.2g}x"


#: The reference's cells in a row it cannot do (its footnote says why).
NO_REFERENCE = "-"


def _trips(row: Row) -> str:
    if row.ours_round_trips is None and row.reference_round_trips is None:
        return ""

    def one(value: float | None) -> str:
        return "?" if value is None else f"{value:g}"

    theirs = NO_REFERENCE if row.reference_s is None else one(row.reference_round_trips)
    return f"{one(row.ours_round_trips)} / {theirs}"


@dataclass
class GroupView:
    """One group as the tables show it."""

    name: str
    reference: str
    #: (operation with its footnote marker, ours, reference, speed-up, round trips)
    lines: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    #: Said once below the group: a note every row shares.
    note: str = ""
    footnotes: list[str] = field(default_factory=list)

    @property
    def has_trips(self) -> bool:
        return any(line[4] for line in self.lines)

    @property
    def heading(self) -> str:
        return f"{self.name}: ours vs {self.reference}"


def group_views(rows: Iterable[Row]) -> list[GroupView]:
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    views = []
    for name, members in by_group.items():
        # Counter keeps first-seen order among equals: the first row's reference wins ties.
        reference = Counter(r.reference_name for r in members).most_common(1)[0][0]
        view = GroupView(name, reference)
        shared = {r.notes for r in members}
        if len(shared) == 1 and members[0].notes and members[0].reference_name == reference:
            view.note = members[0].notes
        for row in members:
            parts = []
            if row.reference_name != reference:
                parts.append(f"reference: {row.reference_name}")
            if row.notes and not view.note:
                parts.append(row.notes)
            operation = row.operation
            if parts:
                text = "; ".join(parts)
                if text not in view.footnotes:
                    view.footnotes.append(text)
                operation += f" [{view.footnotes.index(text) + 1}]"
            view.lines.append(
                (
                    operation,
                    format_time(row.ours_s),
                    NO_REFERENCE if row.reference_s is None else format_time(row.reference_s),
                    NO_REFERENCE if row.speedup is None else format_ratio(row.speedup),
                    _trips(row),
                )
            )
        views.append(view)
    return views


def _wrap(text: str, width: int, indent: str = "", hang: str = "") -> list[str]:
    lines = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + hang)
    return lines or [indent]


def _text_group(view: GroupView, width: int) -> list[str]:
    header = ("operation", "ours", "reference", "speed-up", TRIPS_HEADER)
    columns = 5 if view.has_trips else 4
    cells = [line[:columns] for line in view.lines]
    number_widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(1, columns)]
    rest = sum(number_widths) + 2 * (columns - 1)
    op_width = min(
        max(len(header[0]), *(len(c[0]) for c in cells)), max(20, width - len(INDENT) - rest)
    )

    def line(first: str, others: Iterable[str]) -> str:
        numbers = "  ".join(o.rjust(w) for o, w in zip(others, number_widths, strict=True))
        return f"{INDENT}{first.ljust(op_width)}  {numbers}".rstrip()

    out = _wrap(view.heading, width, hang="    ")
    out.append(line(header[0], header[1:columns]))
    out.append(INDENT + "-" * (op_width + rest))
    for c in cells:
        first, *more = textwrap.wrap(c[0], op_width, subsequent_indent="  ") or [""]
        out.append(line(first, c[1:]))
        out += [f"{INDENT}{m}" for m in more]
    if view.note:
        out += _wrap(view.note, width, INDENT, "  ")
    for i, note in enumerate(view.footnotes, 1):
        out += _wrap(f"[{i}] {note}", width, INDENT, "    ")
    return out


def text_table(rows: list[Row], width: int = WIDTH) -> str:
    """Every group, then the headline, each line at most ``width`` columns."""
    out = _wrap(
        "speed-up = the reference's time / ours (above 1x ours is faster); times are medians "
        "per call; round trips: ours / the reference's, per call.",
        width,
    )
    for view in group_views(rows):
        out += ["", *_text_group(view, width)]
    picked = headline(rows)
    if picked:
        out += ["", *_text_group(_headline_view(picked), width)]
    return "\n".join(out)


# The headline: the few rows that say what a lab gains. (category, how to find its
# rows, how to label one); the chart draws the same rows.
Pick = tuple[str, str, Row]


def _setting(text: str) -> str:
    return "server + client cache" if "client cache" in text else "server"


_HEADLINE: list[tuple[str, Callable[[Row], bool], Callable[[Row], str]]] = [
    (
        "engine tick (madsci's scheduler step)",
        lambda r: (
            r.group in ("workcell (server)", "workcell (server, client cache)")
            and r.operation.startswith("engine tick")
        ),
        lambda r: "engine tick, " + _setting(r.group),
    ),
    (
        "3-step workflow end to end (miniature lab)",
        lambda r: r.group == LAB_GROUP,
        lambda r: "3-step workflow, " + _setting(r.operation),
    ),
    (
        "single operations (one round trip each)",
        lambda r: r.group == "server" and r.operation in ("get", "set", "incr"),
        lambda r: r.operation,
    ),
    (
        "locks",
        lambda r: (
            r.group == "lock"
            and (r.operation.startswith("hand-off") or r.operation.startswith("with lock"))
        ),
        lambda r: r.operation.replace(" (uncontended)", ", uncontended"),
    ),
]


def headline(rows: Iterable[Row]) -> list[Pick]:
    """(category, label, row) for each headline row present, in the headline's order."""
    rows = list(rows)
    return [
        (category, label(r), r)
        for category, wanted, label in _HEADLINE
        for r in rows
        if wanted(r) and r.reference_s is not None
    ]


def floor_note(row: Row) -> str:
    """How close a one-round-trip row is to the loopback floor, when it was measured."""
    if "vs_polling_ping" not in row.extra:
        return ""
    return f"ours {row.extra['vs_polling_ping']:.2f}x a polling raw PING"


def _headline_view(picked: list[Pick]) -> GroupView:
    rows = [
        Row(
            "",
            label,
            r.ours_s,
            r.reference_s,
            r.reference_name,
            r.ours_round_trips,
            r.reference_round_trips,
            notes=floor_note(r) or (r.notes if r.group == LAB_GROUP else ""),
        )
        for _, label, r in picked
    ]
    view = group_views(rows)[0]
    view.name = "headline"
    return view


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
    return "; ".join(
        [f"Python {sys.version.split()[0]} on {platform.machine()} {platform.system()}, {_cpu()}"]
        + ([", ".join(versions)] if versions else [])
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_group(view: GroupView, title: str) -> list[str]:
    columns = 5 if view.has_trips else 4
    header = ("operation", "ours", "reference", "speed-up", TRIPS_HEADER)[:columns]
    out = [title, "", "| " + " | ".join(header) + " |", "|---" + "|--:" * (columns - 1) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in line[:columns]) + " |" for line in view.lines]
    if view.note or view.footnotes:
        out.append("")
    if view.note:
        out.append(f"- {view.note}")
    out += [f"- [{i}] {note}" for i, note in enumerate(view.footnotes, 1)]
    return out


def markdown_report(
    rows: list[Row], command: str, env: str, images: tuple[str | None, str | None]
) -> str:
    """The Markdown of results.md (and of the README's block): the headline
    chart and table, then every group. ``images`` are the headline and detail
    charts' paths relative to the document (None: not drawn)."""
    headline_png, detail_png = images
    out = [f"Measured by `{command}`. {env}.", ""]
    picked = headline(rows)
    if headline_png:
        out += [f"![headline: speed-ups over madsci's handler, log scale]({headline_png})", ""]
    if picked:
        view = _headline_view(picked)
        out += _markdown_group(view, f"**Headline**: ours vs {view.reference}")
        out.append("")
    out += ["<details><summary>Every row, by group</summary>", ""]
    if detail_png:
        out += [f"![every row's speed-up, one panel per group]({detail_png})", ""]
    for view in group_views(rows):
        out += _markdown_group(view, f"**{view.name}**: ours vs {view.reference}")
        out.append("")
    out.append("</details>")
    return "\n".join(out) + "\n"


def write_json(rows: list[Row], path: Path, command: str, env: str) -> None:
    data = {"command": command, "environment": env, "rows": [r.to_json() for r in rows]}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> tuple[list[Row], str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Row(**r) for r in data["rows"]], data["command"], data["environment"]


README_START = "<!-- bench-results:start (written by python -m madsci_cache_rs.bench --readme) -->"
README_END = "<!-- bench-results:end -->"


def replace_readme_block(readme: Path, block: str) -> None:
    """Put ``block`` between the README's bench-results markers."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {README_START!r} ... {README_END!r} block to replace")
    readme.write_text(
        pattern.sub(lambda _: f"{README_START}\n\n{block}\n{README_END}", text, count=1),
        encoding="utf-8",
    )
