"""What a typed user sees: ``mypy --strict`` and pyright (strict) accept
tests/typing/example_user.py and reject each marked line of
tests/typing/example_errors.py; the ABCs the stubs name as bases are ones
the runtime registers, with every method they provide defined natively."""

from __future__ import annotations

import collections.abc
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from madsci_cache_rs import (
    CacheHandler,
    InMemoryCacheHandler,
    InMemoryRedisDict,
    InMemoryRedisList,
    PyCacheHandler,
    RedisDict,
    RedisList,
    StrictRedisDict,
    StrictRedisList,
)
from madsci_cache_rs.handler_modes import StrictInMemoryCacheHandler
from madsci_cache_rs.testing import PrivateServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "tests" / "typing"
USER = EXAMPLES / "example_user.py"
ERRORS = EXAMPLES / "example_errors.py"
EXPECT = re.compile(r"^\s*# expect: (\S+) (\S+)$")
MYPY_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")

#: Diagnostics per line: {line: {code, ...}}.
Found = dict[int, set[str]]


def run_mypy(path: Path) -> tuple[int, Found]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-pretty",
            "--no-error-summary",
            "--show-error-codes",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    found: Found = {}
    for line in proc.stdout.splitlines():
        m = MYPY_LINE.match(line)
        if m and Path(m["file"]).name == path.name:
            found.setdefault(int(m["line"]), set()).add(m["code"])
    if proc.returncode not in (0, 1) or (proc.returncode == 1) != bool(found):
        pytest.fail(f"mypy did not run cleanly ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.returncode, found


def pyright_command() -> list[str]:
    # Beside the interpreter (tests/run.sh's venv) first, then PATH.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("pyright", path=search)
    if exe is None:
        pytest.fail("pyright is not installed: pip install -r tests/requirements.txt")
    return [exe]


def run_pyright(path: Path) -> tuple[int, Found]:
    env = dict(os.environ)
    # The pinned version, with the pinned Node.js from its wheel, and no
    # look-up of newer versions on the network.
    env.update(PYRIGHT_PYTHON_IGNORE_WARNINGS="1", PYRIGHT_PYTHON_GLOBAL_NODE="0")
    proc = subprocess.run(
        [*pyright_command(), "--outputjson", "--pythonpath", sys.executable, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    found: Found = {}
    for diag in report["generalDiagnostics"]:
        if diag["severity"] == "error" and Path(diag["file"]).name == path.name:
            line = diag["range"]["start"]["line"] + 1
            found.setdefault(line, set()).add(diag.get("rule", "?"))
    if report["summary"]["filesAnalyzed"] != 1:
        pytest.fail(f"pyright analysed {report['summary']['filesAnalyzed']} files, not 1")
    return proc.returncode, found


CHECKERS = {"mypy": run_mypy, "pyright": run_pyright}


@pytest.mark.parametrize("checker", CHECKERS)
def test_a_typed_user_type_checks(checker):
    code, found = CHECKERS[checker](USER)
    assert found == {}, f"{checker} rejects {USER.name}: {found}"
    assert code == 0


def expected_errors() -> dict[str, Found]:
    """The codes each checker must report, by line: the line after each
    ``# expect: <mypy code> <pyright rule>`` comment."""
    expected: dict[str, Found] = {"mypy": {}, "pyright": {}}
    for number, text in enumerate(ERRORS.read_text().splitlines(), start=1):
        m = EXPECT.match(text)
        if m:
            expected["mypy"][number + 1] = {m[1]}
            expected["pyright"][number + 1] = {m[2]}
    return expected


@pytest.mark.parametrize("checker", CHECKERS)
def test_mistakes_are_rejected(checker):
    expected = expected_errors()[checker]
    assert len(expected) >= 8
    code, found = CHECKERS[checker](ERRORS)
    assert code != 0
    assert sorted(found) == sorted(expected), f"{checker}: lines reported {found}"
    for line, codes in expected.items():
        assert codes <= found[line], f"{checker}, line {line}: {found[line]}, expected {codes}"


def abc_methods(abc: type) -> set[str]:
    return {
        name
        for klass in abc.__mro__
        if klass.__module__ == "collections.abc"
        for name, value in vars(klass).items()
        if inspect.isfunction(value)
    }


REGISTERED = [
    (RedisDict, collections.abc.MutableMapping),
    (InMemoryRedisDict, collections.abc.MutableMapping),
    (StrictRedisDict, collections.abc.MutableMapping),
    (RedisList, collections.abc.MutableSequence),
    (InMemoryRedisList, collections.abc.MutableSequence),
    (StrictRedisList, collections.abc.MutableSequence),
]


@pytest.mark.parametrize(("cls", "abc"), REGISTERED, ids=lambda c: c.__name__)
def test_registered_collections_define_every_abc_method(cls, abc):
    # A virtual subclass inherits none of the ABC's mixin methods, so one
    # missing here would be typed as present and raise AttributeError.
    assert issubclass(cls, abc)
    assert sorted(abc_methods(abc) - set(vars(cls))) == []


@pytest.mark.parametrize("cls", [PyCacheHandler, InMemoryCacheHandler, StrictInMemoryCacheHandler])
def test_handlers_are_cache_handlers(cls):
    assert issubclass(cls, CacheHandler)
    assert sorted(CacheHandler.__abstractmethods__ - set(dir(cls))) == []


def load_user_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_user", USER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_typed_example_runs_as_typed(server: PrivateServer):
    """The user example's calls, on every handler it builds: what the
    checkers accept, the objects do, with the same results."""
    server.flushall()
    example = load_user_example()
    handlers = example.every_handler(server.host, server.port)
    kinds = sorted({type(h).__name__ for h in handlers})
    assert kinds == ["InMemoryCacheHandler", "PyCacheHandler", "StrictInMemoryCacheHandler"]
    for handler in handlers:
        example.exercise(handler)
        example.concrete(handler)
        assert example.fill(handler.create_dict("fill")) == {"b": 2, "c": [3]}
        assert example.queue(handler.create_list("queue")) == [0, 1, 2, "last", 0, 2]
        handler.close()
