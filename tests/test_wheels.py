"""The wheel for the running interpreter, as a user installs and uses it.

``MADSCI_CACHE_RS_TEST_WHEEL`` names it (``tests/run.sh test`` builds one
manylinux2014 wheel per supported CPython with zig and runs this file under
each of them). It goes into an empty venv made from this interpreter with
``--no-index --only-binary :all:`` and no cargo on PATH, so nothing can be
compiled at install time; then a short script uses the codec, the in-memory
handler and a ``PyCacheHandler`` on a private Valkey.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import redis

from madsci_cache_rs.testing import PrivateServer

WHEEL = os.environ.get("MADSCI_CACHE_RS_TEST_WHEEL")
pytestmark = pytest.mark.skipif(
    not WHEEL,
    reason="set MADSCI_CACHE_RS_TEST_WHEEL to this Python's built wheel to test it installed",
)

# Float layout, a big int, a lone surrogate, a non-str key, a tuple.
VALUE = {"b": [1, 2.5, None, True, 1e-05, 10**30], "a": "caf\u00e9 \ud800", "c": {3: (1, -0.0)}}

# manylinux2014 is glibc 2.17 (PEP 599); its PEP 600 name is manylinux_2_17.
OLDEST_GLIBC = (2, 17)

SMOKE = r"""
import json, sys, sysconfig
import madsci_cache_rs
from madsci_cache_rs import InMemoryCacheHandler, PyCacheHandler, decode_json, encode_json

site = sysconfig.get_paths()["platlib"]
assert madsci_cache_rs.__file__.startswith(site), (madsci_cache_rs.__file__, site)

value = VALUE
text = encode_json(value)
assert text == json.dumps(value, sort_keys=True), text
assert decode_json(text) == json.loads(text)

def failure(func, text):
    try:
        func(text)
    except json.JSONDecodeError as exc:
        return exc.msg, exc.pos
    raise AssertionError(f"{text!r} decoded")

for bad in ("[1,]", '{"a": 1 , }', "[1 2]", '{"a"', '"\\x"'):
    assert failure(decode_json, bad) == failure(json.loads, bad), bad

memory = InMemoryCacheHandler()
nodes = memory.create_dict("nodes")
nodes["n1"] = {"status": "idle"}
queue = memory.create_list("queue")
queue.append("wf1")
with memory.create_lock("lock"):
    assert dict(nodes) == {"n1": {"status": "idle"}} and list(queue) == ["wf1"]

server = PyCacheHandler.from_url(sys.argv[1])
assert server.ping()
state = server.create_dict("smoke:state")
state["value"] = value
assert state["value"] == json.loads(text)
server.create_list("smoke:queue").extend(["wf1", {"id": 2}])
lock = server.create_lock("smoke:lock", auto_release_time=5)
with lock:
    assert lock.locked() > 0
server.close()
print("smoke ok", sys.version_info[0], sys.version_info[1])
"""


def wheel_tags(path: str) -> tuple[str, str, str]:
    """Python, ABI and platform tags from a wheel's file name (PEP 427)."""
    python, abi, platform = Path(path).name.removesuffix(".whl").split("-")[-3:]
    return python, abi, platform


def test_the_wheel_is_manylinux2014_for_this_python():
    python, abi, platform = wheel_tags(WHEEL)
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert (python, abi) == (here, here)
    assert "manylinux_2_17_x86_64" in platform.split(".")
    with zipfile.ZipFile(WHEEL) as wheel:
        names = wheel.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/WHEEL")]
        tags = re.findall(r"^Tag: (\S+)$", wheel.read(meta).decode(), re.M)
        assert f"{here}-{here}-manylinux_2_17_x86_64" in tags
        (native,) = [n for n in names if re.search(r"/_native\..*\.so$", n)]
        library = wheel.read(native)
    # The tag is maturin's claim; what a glibc-2.17 machine's loader checks is
    # the library's undefined symbols. Versioned ones name the glibc they need.
    # An unversioned strong one is a function the build's glibc 2.17 stubs did
    # not have (glibc's gettid() wrapper, say, is from 2.30): on an older glibc
    # the import fails. Only the interpreter's own symbols may be unversioned.
    symbols = undefined_symbols(library)
    glibc = {
        tuple(map(int, version.removeprefix("GLIBC_").split(".")[:2]))
        for _, version, _ in symbols
        if version and version.startswith("GLIBC_")
    }
    assert glibc and max(glibc) <= OLDEST_GLIBC, sorted(glibc)
    unresolved = [
        name
        for name, version, weak in symbols
        if version is None and not weak and not name.startswith(("Py", "_Py"))
    ]
    assert unresolved == []


def undefined_symbols(elf: bytes) -> list[tuple[str, str | None, bool]]:
    """(name, version or None, weak) of each undefined dynamic symbol of a
    64-bit little-endian ELF library, read from .dynsym, .gnu.version and
    .gnu.version_r."""
    assert elf[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file"
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]

    def of_type(kind: int) -> tuple | None:
        return next((sh for sh in sections if sh[1] == kind), None)

    def string(table: tuple, at: int) -> str:
        start = table[4] + at
        return elf[start : elf.index(b"\0", start)].decode()

    dynsym, versym, verneed = of_type(11), of_type(0x6FFFFFFF), of_type(0x6FFFFFFE)
    assert dynsym is not None
    strtab = sections[dynsym[6]]
    versions: dict[int, str] = {}
    if verneed is not None:
        need_at, need_strtab = verneed[4], sections[verneed[6]]
        for _ in range(verneed[7]):  # sh_info: how many Verneed entries
            _, count, _, aux, following = struct.unpack_from("<HHIII", elf, need_at)
            aux_at = need_at + aux
            for _ in range(count):
                _, _, index, name, aux_next = struct.unpack_from("<IHHII", elf, aux_at)
                versions[index] = string(need_strtab, name)
                aux_at += aux_next
            need_at += following
    found = []
    for i in range(dynsym[5] // 24):
        name_at, info, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", elf, dynsym[4] + i * 24)
        name = string(strtab, name_at)
        if shndx != 0 or not name:
            continue
        index = struct.unpack_from("<H", elf, versym[4] + 2 * i)[0] & 0x7FFF if versym else 1
        found.append((name, versions.get(index), info >> 4 == 2))
    return found


def test_the_wheel_installs_without_rust_and_works(tmp_path):
    # No cargo or rustc reachable: an install that tried to build would fail.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "cargo").exists()
    )
    assert shutil.which("cargo", path=path) is None
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "MADSCI_CACHE_RS", "CARGO_HOME", "RUSTUP_HOME")
    }
    env["PATH"] = path
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    subprocess.run(
        [*pip, "install", "-q", "--no-index", "--only-binary", ":all:", WHEEL], env=env, check=True
    )
    with PrivateServer("valkey") as server:
        done = subprocess.run(
            [python, "-c", SMOKE.replace("VALUE", repr(VALUE)), server.url],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["smoke", "ok", *map(str, sys.version_info[:2])]
        # What the installed package wrote is pottery's format, seen from outside.
        raw = redis.Redis(host=server.host, port=server.port)
        stored = raw.hget("smoke:state", json.dumps("value"))
        assert stored == json.dumps(VALUE, sort_keys=True).encode()
        assert raw.lrange("smoke:queue", 0, -1) == [b'"wf1"', b'{"id": 2}']
        raw.close()
