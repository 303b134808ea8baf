"""``python -m madsci_cache_rs.bench``: run every benchmark group and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from madsci_cache_rs.bench import codec_rows
from madsci_cache_rs.bench.report import environment, text_table, write_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madsci_cache_rs.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per row")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for the Markdown table"
    )
    args = parser.parse_args(argv)

    print(environment(), flush=True)
    rows = []
    for name, group in (("codec", codec_rows.rows),):
        print(f"… {name}", file=sys.stderr, flush=True)
        rows += group(args.rounds)
    print(text_table(rows))
    command = "python -m madsci_cache_rs.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    write_markdown(rows, args.out / "results.md", command.strip())
    print(f"\nwrote {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
