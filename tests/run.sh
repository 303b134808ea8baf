#!/usr/bin/env bash
# The README's two commands:
#   bash tests/run.sh test    set up, then run every check (Rust, Python, lints, stubs)
#   bash tests/run.sh bench   set up, then run the side-by-side benchmark
# Set-up is idempotent: a venv in .venv, pinned test dependencies, and a release
# build of the extension installed into it (`test`: one wheel per supported
# Python, see tests/wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
shift || true

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q -r tests/requirements.txt
# Wheels for every supported Python and the quick suites on the others (issue 13).
source tests/wheels.sh

case "$mode" in
bench)
    "$venv/bin/maturin" develop --release -q
    exec "$py" -m madsci_cache_rs.bench "$@"
    ;;
test)
    # Release wheels, .venv's installed into .venv (the wheel as users install it:
    # its start-up .pth is what test_switch checks; an editable install has none).
    build_wheels
    echo "== cargo fmt / clippy (at ${SECONDS} s)"
    cargo fmt --all -- --check
    cargo clippy --all-targets -q -- -D warnings
    echo "== cargo test (at ${SECONDS} s)"
    # The test binary links libpython; point the loader at the venv's interpreter's.
    libdir=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYO3_PYTHON="$py" cargo test -q
    echo "== ruff (at ${SECONDS} s)"
    "$venv/bin/ruff" check python tests
    "$venv/bin/ruff" format --check python tests
    echo "== stubtest (at ${SECONDS} s)"
    "$py" -m mypy.stubtest madsci_cache_rs --mypy-config-file pyproject.toml --allowlist tests/stubtest-allowlist.txt
    # Typing as a user sees it (mypy --strict and pyright on tests/typing/) is
    # tests/test_typing.py, in the pytest step below.
    echo "== pytest (at ${SECONDS} s)"
    # The slowest tests, to keep the whole run well under an hour.
    "$py" -m pytest -q -p no:cacheprovider --durations=25 tests "$@"
    # madsci 0.8.1's own suites, on madsci's classes and then on ours (issue 3).
    echo "== madsci suites (at ${SECONDS} s)" && "$py" tests/madsci_suites.py --workdir target/madsci-suites
    quick_suites
    ;;
*)
    echo "usage: $0 test|bench [pytest or bench args]" >&2
    exit 2
    ;;
esac
