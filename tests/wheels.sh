# Wheels for every supported CPython, and the quick suites on the Pythons
# other than .venv's (issue 13). Sourced by tests/run.sh, which calls
# build_wheels once the test environment is set up and quick_suites at the end
# of `test`.
#
# One manylinux2014 wheel (glibc >= 2.17, x86_64) per CPython, built with
# maturin's --zig: zig links against glibc 2.17's symbols, so no manylinux
# container is needed. .venv's own wheel is installed into .venv in place of
# `maturin develop`, so each version's release build happens once.

# Override with MADSCI_CACHE_RS_PYTHONS="3.11 3.13" (say) to build and test fewer.
WHEEL_PYTHONS=${MADSCI_CACHE_RS_PYTHONS:-"3.10 3.11 3.12 3.13"}
# Pinned: a new zig has broken maturin's --zig builds before (ziglang 0.14.0's
# UBSan runtime left C dependencies with undefined symbols).
ZIGLANG=ziglang==0.15.2

# The quick suites: what every Python besides .venv's runs (.venv's runs all).
# Picked by what can differ between Pythons and by pytest --durations per file
# (on 3.10, 3.12, 3.13): the codec against the running `json` (its messages
# changed in 3.13; generated examples capped at QUICK_EXAMPLES, the hand-picked
# corpora whole), the C-API paths of the server, in-memory and strict classes,
# settings from the environment, the start-up switch (.pth) and the wheel as
# installed: 45-55 s per Python in a trial, about 1.7 min with set-up. Left to
# .venv's run: fault riding, locks, TLS, hostile servers, the miniature lab,
# refused credentials and madsci's suites under the plugin (test_errors 40 s,
# test_install 30 s, test_pytest_plugin 65 s: restarts, waits and child pytest
# runs through code that does not depend on the Python version).
QUICK_TESTS=(
    test_wheels.py
    test_codec.py
    test_server_handler.py
    test_server_dict.py
    test_server_list.py
    test_inmemory.py
    test_strict.py
    test_config_env.py
    test_switch.py
)
QUICK_EXAMPLES=300
# A hung quick suite fails here, loudly, instead of running into CI's limit.
QUICK_TIMEOUT=900
# Not needed by the quick suites: the build, lint and type tools and the
# benchmark's extra packages (about 25 s less set-up per Python).
QUICK_SKIP_REQUIREMENTS='^(maturin|mypy|ruff|pyright|matplotlib|fakeredis|lupa)\b'

# Where each found interpreter and its wheel are: set by build_wheels.
declare -A WHEEL_PYTHON=() WHEEL_FILE=()
MISSING_PYTHONS=""

# A CPython X.Y that runs: pythonX.Y on PATH (a pyenv shim counts only when
# it runs), else the newest $PYENV_ROOT/versions/X.Y.*.
find_python() {
    local v=$1 p
    if p=$(command -v "python$v") && "$p" -c 'import sys' 2>/dev/null; then
        echo "$p"
        return 0
    fi
    for p in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".* 2>/dev/null | sort -V -r); do
        if [ -x "$p/bin/python$v" ] && "$p/bin/python$v" -c 'import sys' 2>/dev/null; then
            echo "$p/bin/python$v"
            return 0
        fi
    done
    return 1
}

say_missing() {
    [ -z "$MISSING_PYTHONS" ] && return 0
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!! NO INTERPRETER for Python$MISSING_PYTHONS: its wheel is NOT built and its"
    echo "!! quick suite NOT run (looked for python3.X on PATH and in"
    echo "!! ${PYENV_ROOT:-$HOME/.pyenv}/versions)."
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}

# Builds target/wheels/*.whl for .venv's Python and every WHEEL_PYTHONS found,
# installs .venv's into .venv, puts every version's library into python/ (as
# `maturin develop` put .venv's: tests run children with python/ on their path),
# and exports MADSCI_CACHE_RS_TEST_WHEEL for .venv's.
build_wheels() {
    local started=$SECONDS main v p interpreters=()
    main=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    WHEEL_PYTHON[$main]=$py
    for v in $WHEEL_PYTHONS; do
        [ "$v" = "$main" ] && continue
        if p=$(find_python "$v"); then
            WHEEL_PYTHON[$v]=$p
        else
            MISSING_PYTHONS+=" $v"
        fi
    done
    say_missing
    for v in $(printf '%s\n' "${!WHEEL_PYTHON[@]}" | sort -V); do
        interpreters+=("${WHEEL_PYTHON[$v]}")
    done
    "$py" -m pip install -q "$ZIGLANG"
    rm -rf target/wheels
    echo "== wheels: manylinux2014 for CPython $(printf '%s\n' "${!WHEEL_PYTHON[@]}" | sort -V | xargs)"
    # maturin runs `python3 -m ziglang` when no zig is on PATH: .venv's first.
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" build --release -q --zig \
        --compatibility manylinux2014 -i "${interpreters[@]}" -o target/wheels
    for v in "${!WHEEL_PYTHON[@]}"; do
        WHEEL_FILE[$v]=$(ls target/wheels/madsci_cache_rs-*-cp${v/./}-cp${v/./}-*.whl)
        "$py" - "${WHEEL_FILE[$v]}" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith("madsci_cache_rs/_native.") and name.endswith(".so"):
            with open("python/" + name, "wb") as out:
                out.write(wheel.read(name))
PY
    done
    "$py" -m pip install -q --no-deps --force-reinstall "${WHEEL_FILE[$main]}"
    MADSCI_CACHE_RS_TEST_WHEEL=$PWD/${WHEEL_FILE[$main]}
    export MADSCI_CACHE_RS_TEST_WHEEL
    echo "   built in $((SECONDS - started)) s: $(cd target/wheels && ls | xargs)"
}

# For every found Python besides .venv's: .venvs/pyX.Y with the pinned test
# environment and that version's wheel, then QUICK_TESTS.
quick_suites() {
    local main v started venv_v
    main=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    for v in $(printf '%s\n' "${!WHEEL_PYTHON[@]}" | sort -V); do
        [ "$v" = "$main" ] && continue
        started=$SECONDS
        echo "== quick suite on Python $v (${WHEEL_PYTHON[$v]})"
        venv_v=.venvs/py$v
        [ -x "$venv_v/bin/python" ] || "${WHEEL_PYTHON[$v]}" -m venv "$venv_v"
        "$venv_v/bin/python" -m pip install -q --upgrade pip
        grep -v -E "$QUICK_SKIP_REQUIREMENTS" tests/requirements.txt > "$venv_v/requirements.txt"
        "$venv_v/bin/python" -m pip install -q -r "$venv_v/requirements.txt"
        "$venv_v/bin/python" -m pip install -q --no-deps --force-reinstall "${WHEEL_FILE[$v]}"
        MADSCI_CACHE_RS_TEST_WHEEL=$PWD/${WHEEL_FILE[$v]} MADSCI_CACHE_RS_TEST_EXAMPLES=$QUICK_EXAMPLES \
            timeout --signal=INT --kill-after=30 "$QUICK_TIMEOUT" \
            "$venv_v/bin/python" -m pytest -q -rs -p no:cacheprovider "${QUICK_TESTS[@]/#/tests/}" || {
            rc=$?
            [ "$rc" = 124 ] && echo "!! the quick suite on Python $v hung: stopped after $QUICK_TIMEOUT s"
            return "$rc"
        }
        echo "   Python $v: set-up and quick suite in $((SECONDS - started)) s"
    done
    say_missing
}
