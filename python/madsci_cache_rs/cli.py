"""The ``madsci-cache-rs`` console script.

``run -- COMMAND...`` runs COMMAND with the switch on, for images where
adding ``MADSCI_CACHE_RS=1`` to the environment is awkward but changing the
command is not. The command replaces this process (exec), so signals reach it
directly and its exit status is the one returned.

``doctor [URL]`` checks a server before a lab trusts it with live state
(``doctor.py``). ``bench [ARGS]`` runs the side-by-side benchmark
(``python -m madsci_cache_rs.bench``).
"""

from __future__ import annotations

import argparse
import logging
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
    doctor = commands.add_parser(
        "doctor",
        help="check a server before trusting it with a lab's live state",
        description="Report a server's persistence, eviction policy, replication, latency "
        "and madsci's workcells and locks. Exit 0: no dangerous setting; 1: a setting that "
        "can lose state; 3: cannot reach the server; 4: authentication refused.",
    )
    doctor.add_argument("url", nargs="?", help="server URL (default: $MADSCI_CACHE_RS_URL)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the server")
    doctor.add_argument("--max-keys", type=int, default=1000, help="keys listed per pattern")
    return parser


def _doctor(args: argparse.Namespace) -> int:
    # Imported here: `run` execs at once and needs none of it.
    from madsci_cache_rs import doctor

    # The report says what failed; the library's own warnings would repeat it.
    logging.getLogger("madsci_cache_rs").setLevel(logging.ERROR)

    url = args.url or os.environ.get("MADSCI_CACHE_RS_URL")
    if not url:
        _parser().error("doctor: no URL given and MADSCI_CACHE_RS_URL is not set")
    try:
        status, text = doctor.run(url, as_json=args.json, wait=args.wait, max_keys=args.max_keys)
    except ValueError as exc:  # a malformed URL; the message never holds its password
        _parser().error(f"doctor: {exc}")
    print(text)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every argument is the benchmark's, --help included
        from madsci_cache_rs.bench.__main__ import main as bench

        return bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
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
