"""``madsci-cache-rs run -- COMMAND...``: run COMMAND with the switch on.
(``madsci-cache-rs bench [ARGS]`` runs the benchmark, ``python -m madsci_cache_rs.bench``.)

For images where adding ``MADSCI_CACHE_RS=1`` to the environment is awkward
but changing the command is not. The command replaces this process (exec),
so signals reach it directly and its exit status is the one returned.
"""

from __future__ import annotations

import argparse
import os
import sys

from madsci_cache_rs_switch import _ON, ENV_FLAG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madsci-cache-rs", description="Tools for madsci-cache-rs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help=f"run COMMAND with {ENV_FLAG}=1, so madsci in it uses madsci-cache-rs",
        description=f"Run COMMAND with {ENV_FLAG}=1 (kept if it already names a mode), "
        "replacing this process.",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    bench = commands.add_parser(
        "bench", help="run the side-by-side benchmark (bench --help: its options)", add_help=False
    )
    bench.add_argument("argv", nargs="*", metavar="ARGS")  # only for --help: main() passes them on
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every argument is the benchmark's, --help included
        from madsci_cache_rs.bench.__main__ import main as bench

        return bench(argv[1:])
    args = _parser().parse_args(argv)
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        _parser().error("run: no COMMAND given (usage: madsci-cache-rs run -- COMMAND ...)")
    env = dict(os.environ)
    if env.get(ENV_FLAG, "").strip().lower() not in _ON:
        env[ENV_FLAG] = "1"
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:  # exec only returns on failure
        print(f"madsci-cache-rs: {command[0]}: {exc.strerror}", file=sys.stderr)
        # The shell's codes, so wrappers read them as they would a shell's.
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
