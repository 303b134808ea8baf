"""Codec rows: encode_json / decode_json against json.dumps(sort_keys=True) / json.loads."""

from __future__ import annotations

import json

from madsci_cache_rs import decode_json, encode_json
from madsci_cache_rs.bench.timing import Row, compare

REFERENCE = "stdlib json: dumps(sort_keys=True) / loads"
SMALL_DOCUMENT = {"status": "running", "ok": True, "step": 3, "progress": 0.75, "error": None}


def nested_document(entries: int = 100) -> dict[str, object]:
    """A workcell-like document: ``entries`` nodes, each a small nested record."""
    return {
        f"node_{i:03d}": {
            "node_url": f"http://127.0.0.1:{8000 + i}/",
            "status": {"ready": i % 3 != 0, "busy": i % 5 == 0, "errored": False},
            "info": {"name": f"Node {i}", "version": "0.8.1", "capabilities": ["run", "status"]},
            "state": {"temperature": 21.5 + i / 7, "count": i * 11, "last": None},
            "tags": [i, i + 1.25, "é" if i % 10 == 0 else "e"],
        }
        for i in range(entries)
    }


def _codec_rows(name: str, doc: object, rounds: int) -> list[Row]:
    text = json.dumps(doc, sort_keys=True)
    assert encode_json(doc) == text, "the codec must be byte-identical before it is timed"
    enc = compare(lambda: encode_json(doc), lambda: json.dumps(doc, sort_keys=True), rounds=rounds)
    dec = compare(lambda: decode_json(text), lambda: json.loads(text), rounds=rounds)
    return [
        Row("codec", f"encode, {name}", *enc, REFERENCE),
        Row("codec", f"decode, {name}", *dec, REFERENCE),
    ]


def rows(rounds: int = 15) -> list[Row]:
    return _codec_rows("small document", SMALL_DOCUMENT, rounds) + _codec_rows(
        "100-entry nested document", nested_document(), rounds
    )
