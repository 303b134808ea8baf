"""install()/uninstall() and the pytest plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import madsci_cache_rs
from madsci_cache_rs import _install

madsci_ch = pytest.importorskip("madsci.common.db_handlers.cache_handler")


@pytest.fixture
def clean_install():
    was_installed = _install.installed()
    _install.uninstall()
    yield
    _install.uninstall()
    if was_installed:
        _install.install()


def held(module_name: str, name: str):
    return getattr(sys.modules[module_name], name)


def test_install_swaps_every_target_and_uninstall_restores(clean_install):
    before = {
        (m, n): held(m, n)
        for m, names in _install.TARGETS.items()
        if _install._load(m) is not None
        for n in names
        if hasattr(sys.modules[m], n)
    }
    swapped = _install.install()
    assert "madsci.common.local_backends.local_runner.InMemoryCacheHandler" in swapped
    assert "madsci.workcell_manager.workcell_server.CacheHandler" in swapped
    assert "madsci.location_manager.location_migration.CacheHandler" in swapped
    for module_name, name in before:
        ours = getattr(madsci_cache_rs, name, None)
        if ours is not None:
            assert held(module_name, name) is ours, (module_name, name)
        else:  # not built into this package (yet): left alone
            assert held(module_name, name) is before[(module_name, name)]
    assert _install.install() == swapped  # idempotent
    _install.uninstall()
    for (module_name, name), original in before.items():
        assert held(module_name, name) is original, (module_name, name)


def test_madsci_code_builds_our_classes_once_installed(clean_install):
    original_handler = madsci_ch.InMemoryCacheHandler
    _install.install()
    # madsci's own handler imports the InMemory classes at call time.
    assert isinstance(original_handler().create_dict("k"), madsci_cache_rs.InMemoryRedisDict)
    from madsci.common.local_backends.local_runner import LocalRunner  # noqa: F401

    assert (
        held("madsci.common.local_backends.local_runner", "InMemoryCacheHandler")
        is madsci_cache_rs.InMemoryCacheHandler
    )


def test_our_handlers_count_as_madsci_cache_handlers():
    handler = madsci_cache_rs.InMemoryCacheHandler()
    original = _install._originals.get(
        ("madsci.common.db_handlers.cache_handler", "CacheHandler"), madsci_ch.CacheHandler
    )
    assert isinstance(handler, original)
    assert isinstance(handler, madsci_cache_rs.CacheHandler)
    assert isinstance(madsci_cache_rs.InMemoryCacheHandler(strict=True), original)

    class Custom(original):  # a madsci-style subclass counts as ours too
        pass

    assert issubclass(Custom, madsci_cache_rs.CacheHandler)
    with pytest.raises(TypeError):
        madsci_cache_rs.CacheHandler()


PROBE_TEST = textwrap.dedent(
    """
    import madsci.common.db_handlers as handlers
    import madsci_cache_rs
    from conftest import BOUND_AT_CONFTEST_IMPORT

    def test_probe(madsci_cache_handler, madsci_strict_cache_handler, madsci_cache_server):
        assert madsci_strict_cache_handler.strict and not madsci_cache_handler.strict
        assert madsci_cache_server.running and madsci_cache_server.port != 6379
        ours = handlers.InMemoryCacheHandler is madsci_cache_rs.InMemoryCacheHandler
        assert ours is EXPECT
        assert (BOUND_AT_CONFTEST_IMPORT is madsci_cache_rs.InMemoryCacheHandler) is EXPECT
    """
)


@pytest.mark.parametrize(
    ("args", "env_flag", "expect"),
    [
        (["-p", "madsci_cache_rs.pytest_plugin"], None, True),
        ([], "1", True),
        ([], None, False),  # the entry point alone stays inert
    ],
)
def test_pytest_plugin(tmp_path: Path, args, env_flag, expect):
    (tmp_path / "conftest.py").write_text(
        "from madsci.common.db_handlers.cache_handler import InMemoryCacheHandler\n"
        "BOUND_AT_CONFTEST_IMPORT = InMemoryCacheHandler\n"
    )
    (tmp_path / "test_probe.py").write_text(PROBE_TEST.replace("EXPECT", str(expect)))
    env = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS"}
    if env_flag:
        env["MADSCI_CACHE_RS"] = env_flag
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            *args,
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


@pytest.mark.parametrize("madsci_first", [False, True])
def test_isinstance_of_madsci_cache_handler_in_either_import_order(madsci_first):
    imports = ["import madsci_cache_rs", "import madsci.common.db_handlers as handlers"]
    if madsci_first:
        imports.reverse()
    code = "\n".join(
        [
            *imports,
            "ours = madsci_cache_rs.InMemoryCacheHandler",
            "assert isinstance(ours(), handlers.CacheHandler)",
            "assert isinstance(ours(strict=True), handlers.CacheHandler)",
            "assert handlers.InMemoryCacheHandler is not madsci_cache_rs.InMemoryCacheHandler",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
