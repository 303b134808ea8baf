"""The MADSCI_CACHE_RS switch and ``madsci-cache-rs run``.

Each check runs in a fresh interpreter, because the switch acts at start-up.
``site.addsitedir(python/)`` makes ``site`` read the repository's own
``madsci_cache_rs_switch.pth`` exactly as it reads one in site-packages
(``maturin develop`` does not install it), so the line under test is the
shipped one. With ``MADSCI_CACHE_RS_TEST_WHEEL=path/to.whl`` the built wheel
is also installed by pip into a throwaway venv and tested as deployed.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("madsci.common.db_handlers.cache_handler")

REPO = Path(__file__).resolve().parent.parent
PYDIR = REPO / "python"
PTH = PYDIR / "madsci_cache_rs_switch.pth"
START = PYDIR / "madsci_cache_rs_switch.start"

# What a process sees of the switch: run first in every child.
PRELUDE = f"""
import site, sys
site.addsitedir({str(PYDIR)!r})
eager = sorted(m for m in sys.modules if m.split(".")[0] in ("madsci", "madsci_cache_rs"))
print("switch-imported", "madsci_cache_rs_switch" in sys.modules)
"""


def run(code: str, flag: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS"}
    env["PYTHONPATH"] = str(PYDIR)
    if flag is not None:
        env["MADSCI_CACHE_RS"] = flag
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


HANDLERS_SEEN = (
    PRELUDE
    + """
switch = sys.modules.get("madsci_cache_rs_switch")
print("eager", eager)
print("switch-loaded", bool(switch and switch.active()))
from madsci.common.db_handlers import cache_handler, PyCacheHandler
print("module", cache_handler.PyCacheHandler.__module__)
print("package", PyCacheHandler.__module__)
"""
)


def test_shipped_files_point_at_the_same_start():
    lines = [ln for ln in PTH.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("import ")  # site executes only these
    assert '"madsci_cache_rs_switch"' in lines[0] and ".start()" in lines[0]
    (entry,) = START.read_text().split()
    import madsci_cache_rs_switch

    assert pkgutil.resolve_name(entry) is madsci_cache_rs_switch.start


def test_unset_leaves_madsci_its_own_and_imports_nothing():
    out = ok(run(HANDLERS_SEEN, None))
    assert "eager []" in out
    assert "switch-imported False" in out  # the .pth line stopped at the variable
    assert "module madsci.common.db_handlers.cache_handler" in out
    assert "package madsci.common.db_handlers.cache_handler" in out


def test_on_patches_madsci_as_it_is_imported_and_not_before():
    out = ok(run(HANDLERS_SEEN, "1"))
    assert "eager []" in out  # neither madsci nor our native package at start-up
    assert "switch-imported True" in out
    assert "switch-loaded True" in out
    assert "module madsci_cache_rs" in out
    assert "package madsci_cache_rs" in out


@pytest.mark.parametrize("flag", ["true", "YES", " on ", "cluster", "sentinel"])
def test_other_spellings_of_on(flag):
    assert "module madsci_cache_rs" in ok(run(HANDLERS_SEEN, flag))


def test_unrecognised_value_warns_and_madsci_runs_as_before():
    proc = run(HANDLERS_SEEN, "maybe")
    out = ok(proc)
    assert "MADSCI_CACHE_RS='maybe' is not understood" in proc.stderr
    assert "module madsci.common.db_handlers.cache_handler" in out


def test_the_classes_madsci_binds_are_ours_everywhere_it_imported_them():
    code = (
        PRELUDE
        + """
import madsci_cache_rs
from madsci_cache_rs import _install
import madsci.workcell_manager.workcell_server, madsci.location_manager.location_server
import madsci.common.local_backends.local_runner
wrong = [
    f"{m}.{n}" for m, names in _install.TARGETS.items() if m in sys.modules
    for n in names
    if hasattr(sys.modules[m], n) and hasattr(madsci_cache_rs, n)
    and getattr(sys.modules[m], n) is not getattr(madsci_cache_rs, n)
]
print("wrong", wrong)
print("patched", len(_install._originals))
_install.uninstall()
from madsci.common.db_handlers import cache_handler
from madsci.workcell_manager import state_handler
print("restored", cache_handler.PyCacheHandler.__module__, state_handler.PyCacheHandler.__module__)
"""
    )
    out = ok(run(code, "1"))
    assert "wrong []" in out
    assert "patched 0" not in out
    # Modules imported after their source was patched get madsci's back too.
    assert (
        "restored madsci.common.db_handlers.cache_handler madsci.common.db_handlers.cache_handler"
        in out
    )


def test_a_workcell_manager_builds_our_handler(tmp_path):
    from madsci_cache_rs.testing import PrivateServer, ServerUnavailable

    try:
        server = PrivateServer()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    code = f"""
import site
site.addsitedir({str(PYDIR)!r})
import madsci_cache_rs
from madsci.common.db_handlers.document_storage_handler import InMemoryDocumentStorageHandler
from madsci.common.types.workcell_types import WorkcellManagerSettings
from madsci.workcell_manager.state_handler import WorkcellStateHandler
settings = WorkcellManagerSettings(cache_host="127.0.0.1", cache_port={{port}})
documents = InMemoryDocumentStorageHandler()
state = WorkcellStateHandler(workcell_settings=settings, document_handler=documents)
print("type", type(state._cache_handler).__module__, type(state._cache_handler).__name__)
print("ours", type(state._cache_handler) is madsci_cache_rs.PyCacheHandler)
state.initialize_workcell_state()
print("status", state.get_workcell_status().initializing)
"""
    with server:
        out = ok(run(code.replace("{port}", str(server.port)), "1"))
    assert "ours True" in out, out
    assert "status False" in out


def test_madsci_already_imported_is_patched_at_once():
    # The flag is set only after start-up: where the wheel is installed (as in
    # tests/run.sh's venvs) its .pth would otherwise switch on before madsci loads.
    code = """
import madsci.common.db_handlers.cache_handler as ch
import madsci_cache_rs_switch
before = ch.PyCacheHandler.__module__
os.environ["MADSCI_CACHE_RS"] = "1"
madsci_cache_rs_switch.start()
madsci_cache_rs_switch.start()  # the .pth line and the .start entry point both ran
finders = [f for f in sys.meta_path if isinstance(f, madsci_cache_rs_switch._PatchOnImport)]
print(before, ch.PyCacheHandler.__module__, len(finders))
"""
    out = ok(run("import os, sys\n" + code, None))
    assert "madsci.common.db_handlers.cache_handler madsci_cache_rs 1" in out


RUN_CHILD = (
    PRELUDE
    + """
import os
from madsci.common.db_handlers.cache_handler import PyCacheHandler
print("flag", os.environ["MADSCI_CACHE_RS"], "handler", PyCacheHandler.__module__)
sys.exit(7)
"""
)


def test_run_turns_the_switch_on_and_passes_the_exit_status_through():
    proc = run(
        "from madsci_cache_rs.cli import main; main()",
        None,
    )
    assert proc.returncode != 0  # no subcommand: usage error
    env = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS"}
    env["PYTHONPATH"] = str(PYDIR)
    cmd = [sys.executable, "-m", "madsci_cache_rs", "run", "--"]
    proc = subprocess.run(
        [*cmd, sys.executable, "-c", textwrap.dedent(RUN_CHILD)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 7, proc.stderr
    assert "flag 1 handler madsci_cache_rs" in proc.stdout
    # A mode already chosen is kept (the pytest plugin reads it).
    env["MADSCI_CACHE_RS"] = "strict"
    child = "import os; print(os.environ['MADSCI_CACHE_RS'])"
    proc = subprocess.run([*cmd, sys.executable, "-c", child], env=env, capture_output=True)
    assert proc.stdout.strip() == b"strict"


def test_run_execs_in_place_and_reports_a_missing_command():
    env = {**os.environ, "PYTHONPATH": str(PYDIR)}
    cmd = [sys.executable, "-m", "madsci_cache_rs", "run", "--"]
    child = "import os; print(os.getpid())"
    proc = subprocess.Popen(
        [*cmd, sys.executable, "-c", child], env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    assert int(out) == proc.pid  # exec, not a child: signals reach the command itself
    proc2 = subprocess.run(
        [*cmd, "no-such-command-madsci-cache-rs"], env=env, capture_output=True, text=True
    )
    assert proc2.returncode == 127
    assert "no-such-command-madsci-cache-rs" in proc2.stderr


def test_console_script_names_the_cli():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    from madsci_cache_rs import cli

    assert pkgutil.resolve_name(scripts["madsci-cache-rs"]) is cli.main


def test_a_broken_package_warns_and_madsci_runs_on_its_own(tmp_path):
    broken = tmp_path / "madsci_cache_rs"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('no native library here')\n")
    code = HANDLERS_SEEN
    env = {k: v for k, v in os.environ.items() if k != "MADSCI_CACHE_RS"}
    env.update(MADSCI_CACHE_RS="1", PYTHONPATH=os.pathsep.join([str(tmp_path), str(PYDIR)]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )
    assert "module madsci.common.db_handlers.cache_handler" in ok(proc)
    assert "madsci-cache-rs cannot be imported" in proc.stderr


@pytest.mark.skipif(
    not os.environ.get("MADSCI_CACHE_RS_TEST_WHEEL"),
    reason="set MADSCI_CACHE_RS_TEST_WHEEL to a built wheel (maturin build) to test it installed",
)
def test_the_installed_wheel_switches_madsci(tmp_path):
    """The wheel as pip installs it: its .pth at site-packages' root, read by
    site at start-up, and the console script on PATH."""
    wheel = os.environ["MADSCI_CACHE_RS_TEST_WHEEL"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", wheel], check=True)
    site_packages = Path(
        subprocess.check_output(
            [python, "-c", "import site; print(site.getsitepackages()[0])"], text=True
        ).strip()
    )
    assert (site_packages / "madsci_cache_rs_switch.pth").read_text() == PTH.read_text()
    assert (site_packages / "madsci_cache_rs_switch.start").read_text() == START.read_text()
    # madsci and its dependencies from the test interpreter, after the wheel's own files.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site_packages / "zz_test_deps.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MADSCI_CACHE_RS", "PYTHONPATH")}
    code = (
        "import sys; eager = [m for m in sys.modules if m.startswith('madsci')]\n"
        "from madsci.common.db_handlers.cache_handler import PyCacheHandler\n"
        "import madsci_cache_rs; print(eager, PyCacheHandler.__module__, madsci_cache_rs.__file__)"
    )
    unset = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    assert "[] madsci.common.db_handlers.cache_handler" in ok(unset)
    script = venv / "bin" / "madsci-cache-rs"
    on = subprocess.run(
        [script, "run", "--", python, "-c", code], env=env, capture_output=True, text=True
    )
    out = ok(on)
    assert "['madsci_cache_rs_switch'] madsci_cache_rs " in out
    assert str(site_packages) in out  # the installed package, not the repository's
