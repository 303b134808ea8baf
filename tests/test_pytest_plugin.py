"""The pytest plugin's server fixtures, used as a madsci user would."""

from __future__ import annotations

import subprocess
import sys
import textwrap

USER_TESTS = textwrap.dedent(
    """
    def test_first(madsci_server_cache_handler):
        assert madsci_server_cache_handler.ping()
        d = madsci_server_cache_handler.create_dict("state")
        assert d.to_dict() == {}
        d["a"] = 1
        madsci_server_cache_handler.set("k", "v")

    def test_second_starts_empty(madsci_server_cache_handler, madsci_cache_server):
        assert madsci_server_cache_handler.get("k") is None
        assert madsci_server_cache_handler.create_dict("state").to_dict() == {}
        assert str(madsci_cache_server.port) in madsci_server_cache_handler.url
    """
)


def test_fixtures_give_a_real_server_and_an_empty_handler(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "madsci_cache_rs.pytest_plugin", "-p",
         "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
