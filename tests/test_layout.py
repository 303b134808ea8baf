"""The Rust layout stays acyclic: no file in ``src/`` reaches, through its
``use`` paths, a file that reaches it back (a child using what its parent
re-exports does not count). A cycle means a helper lives away from where its
name says, which the issue that split the modules set out to end."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*mod tests \{.*", re.S)
PATH = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
GROUP = re.compile(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^}]*)\}")


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.rs"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        found["::".join(parts)] = path
    return found


def resolve(mods: dict[str, Path], here: str, use: str) -> str | None:
    segments = use.split("::")
    base = here.split("::") if here else []
    if segments[0] == "crate":
        base, segments = [], segments[1:]
    elif segments[0] == "super":
        while segments and segments[0] == "super":
            base, segments = base[:-1], segments[1:]
    else:  # self
        segments = segments[1:]
    best = None
    for i in range(len(segments) + 1):
        candidate = "::".join(base + segments[:i])
        if candidate in mods:
            best = candidate
    return best


def use_graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for here, path in mods.items():
        text = TEST_MODULE.sub("", path.read_text())
        uses = PATH.findall(text)
        for head, body in GROUP.findall(text):
            uses += [
                f"{head}::{item.strip().split('::')[0]}" for item in body.split(",") if item.strip()
            ]
        for use in uses:
            target = resolve(mods, here, use)
            if target and target != here and not here.startswith(f"{target}::"):
                edges[here].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_files():
    assert cycles(use_graph()) == []


def test_the_check_sees_a_cycle():
    """The checker itself: two files that use each other are one cycle."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(edges) == [["a", "b"]]
    assert "server::handler" in use_graph()["server::dict"]
