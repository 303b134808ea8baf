"""RedisDict on a real server: the mapping API, pottery's wire format in
both directions, one round trip per operation, bad input."""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, MutableMapping

import pottery
import pydantic
import pytest
from helpers import round_trips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madsci_cache_rs import CacheResponseError, InMemoryCacheHandler, RedisDict, encode_json

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
dict_keys = st.text(max_size=8) | st.integers() | st.booleans() | st.none()
pytestmark = pytest.mark.filterwarnings("ignore::pottery.InefficientAccessWarning")
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


class ReadOnly(Mapping):
    """A Mapping that is not a dict: equality must still hold."""

    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_mapping_api_matches_dict(handler, raw):
    d = handler.create_dict("d")
    model: dict = {}
    assert isinstance(d, MutableMapping)
    assert len(d) == 0 and not d and d.to_dict() == {}
    for k, v in [("a", 1), ("b", [1, 2]), (3, {"x": None}), ("a", 2.5)]:
        d[k] = v
        model[k] = v
    assert d.to_dict() == model
    assert len(d) == 3 and d
    assert d["a"] == 2.5 and d[3] == {"x": None}
    assert "a" in d and 3 in d and "3" not in d and "zz" not in d
    # An unencodable key cannot be stored: False with no command, as pottery.
    assert round_trips(raw, lambda: (object() in d, {1} in d)) == {}
    assert (object() in d, {1} in d) == (False, False)
    assert sorted(d, key=repr) == sorted(model, key=repr)
    assert dict(d.items()) == model and set(d.keys()) == set(model)
    assert sorted(map(repr, d.values())) == sorted(map(repr, model.values()))
    assert d.get("zz") is None and d.get("zz", 7) == 7 and d.get("a") == 2.5
    with pytest.raises(KeyError, match="zz"):
        d["zz"]
    with pytest.raises(KeyError):
        del d["zz"]
    del d["b"]
    del model["b"]
    d.update({"c": 3}, e=5)
    d.update([("f", 6)])
    model.update({"c": 3}, e=5, f=6)
    assert d.to_dict() == model
    with pytest.raises(TypeError, match="at most 1"):
        d.update({}, {})
    assert d.pop("c") == 3 and d.pop("c", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("c")
    del model["c"]
    assert d.setdefault("a", 0) == 2.5 and d.setdefault("g") is None and d["g"] is None
    model["g"] = None
    k, v = d.popitem()
    assert model.pop(k) == v
    assert (
        d == model
        and d
        == type(
            "M",
            (Mapping,),
            {
                "__getitem__": model.__getitem__,
                "__iter__": lambda s: iter(model),
                "__len__": model.__len__,
            },
        )()
    )
    assert d != {"other": 1} and (d == 5) is False
    assert repr(d) == f"RedisDict{d.to_dict()!r}"
    d.clear()
    assert len(d) == 0 and raw.exists("d") == 0
    with pytest.raises(KeyError, match="empty"):
        d.popitem()
    with pytest.raises(TypeError):
        hash(d)


def test_create_dict_is_cheap_and_shares_the_hash(handler):
    a = handler.create_dict("shared")
    b = handler.create_dict("shared")
    a["x"] = 1
    assert b["x"] == 1 and a == b and a.key == "shared"
    assert RedisDict(key="shared", redis=handler)["x"] == 1


@HYPOTHESIS
@given(data=st.dictionaries(dict_keys, json_values, max_size=6))
def test_pottery_writes_we_read(handler, raw, data):
    raw.delete("wire")
    theirs = pottery.RedisDict(redis=raw, key="wire")
    theirs.update(data)
    ours = handler.create_dict("wire")
    assert ours.to_dict() == data == theirs.to_dict()
    # Read again: documents seen before are copied from a template.
    for _ in range(3):
        assert {k: ours[k] for k in data} == data
        assert ours.to_dict() == data


@HYPOTHESIS
@given(data=st.dictionaries(dict_keys, json_values, max_size=6))
def test_we_write_pottery_reads_byte_for_byte(handler, raw, data):
    raw.delete("ours", "theirs")
    handler.create_dict("ours").update(data)
    pottery.RedisDict(redis=raw, key="theirs").update(data)
    assert raw.hgetall("ours") == raw.hgetall("theirs")
    assert (
        pottery.RedisDict(redis=raw, key="ours").to_dict() == handler.create_dict("ours").to_dict()
    )
    for k, v in data.items():
        assert raw.hget("ours", encode_json(k)) == encode_json(v).encode()


def test_single_writes_are_pottery_bytes(handler, raw):
    d = handler.create_dict("d")
    d["key"] = {"b": 1, "a": [1.5, None, "é"]}
    p = pottery.RedisDict(redis=raw, key="p")
    p["key"] = {"b": 1, "a": [1.5, None, "é"]}
    assert (
        raw.hgetall("d") == raw.hgetall("p") == {b'"key"': b'{"a": [1.5, null, "\\u00e9"], "b": 1}'}
    )


def _filled(handler, n=100):
    d = handler.create_dict("d")
    d.update({f"k{i}": {"i": i, "s": "x" * 10} for i in range(n)})
    d.pop("k0")  # loads the pop script once, so its count below is steady-state
    d["k0"] = {"i": 0, "s": "x" * 10}
    return d


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda d: d.to_dict(), {"hgetall": 1}),
        (lambda d: list(d.items()), {"hgetall": 1}),
        (lambda d: list(d.values()), {"hgetall": 1}),
        # A for loop; list(d) would also ask len() for a size hint.
        (lambda d: [k for k in d], {"hkeys": 1}),
        (lambda d: list(d.keys()), {"hkeys": 1}),
        (lambda d: d["k5"], {"hget": 1}),
        (lambda d: d.get("k5"), {"hget": 1}),
        (lambda d: "k5" in d, {"hexists": 1}),
        (lambda d: len(d), {"hlen": 1}),
        (lambda d: d.update({f"n{i}": i for i in range(10)}), {"evalsha": 1, "hset": 1}),
        (lambda d: d.__setitem__("k1", 1), {"evalsha": 1, "hset": 1}),
        (lambda d: d.__delitem__("k1"), {"evalsha": 1, "hdel": 1}),
        (lambda d: d.pop("k1"), {"evalsha": 1, "hget": 1, "hdel": 1}),
        (lambda d: d.clear(), {"evalsha": 1, "unlink": 1}),
        (lambda d: d == {}, {"hgetall": 1}),
    ],
    ids=lambda v: "" if callable(v) else "-".join(v),
)
def test_one_round_trip_per_operation(handler, raw, operation, expected):
    """Commands a script runs are listed by INFO commandstats too; the
    client sent one command (the EVALSHA) in those rows."""
    d = _filled(handler)
    assert round_trips(raw, lambda: operation(d)) == expected


def test_update_from_another_redis_dict_reads_it_once(handler, raw):
    src = handler.create_dict("src")
    src.update({f"k{i}": i for i in range(20)})
    dst = handler.create_dict("dst")
    assert round_trips(raw, lambda: dst.update(src)) == {"hgetall": 1, "evalsha": 1, "hset": 1}
    assert dst.to_dict() == src.to_dict()


def test_create_dict_costs_nothing(handler, raw):
    assert round_trips(raw, lambda: [handler.create_dict(f"d{i}") for i in range(50)]) == {}


class Status(pydantic.BaseModel):
    ready: bool
    busy: bool = False
    errors: list[str] = []
    step: int = 0
    detail: dict = {}


def test_pydantic_validates_a_dict_object_in_one_round_trip(handler, raw):
    d = handler.create_dict("status")
    d.update(ready=True, errors=["e"], step=3, detail={"a": 1})
    counts = round_trips(raw, lambda: [Status.model_validate(d) for _ in range(3)])
    assert counts == {"hgetall": 3}  # one per validation, not one per field
    assert Status.model_validate(d) == Status(ready=True, errors=["e"], step=3, detail={"a": 1})
    d["step"] = 4  # a later validation sees later data
    assert Status.model_validate(d).step == 4
    # Outside pydantic, get() is one HGET as usual and always fresh.
    assert round_trips(raw, lambda: (d.get("step"), d.get("step"))) == {"hget": 2}


def test_a_validation_keeps_no_frame_alive_after_it_returns(handler):
    d = handler.create_dict("status")
    d.update(ready=True)

    class Big:
        pass

    def validate_beside_a_local() -> weakref.ref:
        big = Big()
        Status.model_validate(d)
        return weakref.ref(big)

    # A kept frame would keep its callers' frames, and their locals, alive.
    assert validate_beside_a_local()() is None


class Left(pydantic.BaseModel):
    a: int = 0
    b: int = 0


class Right(pydantic.BaseModel):
    c: int = 0
    d: int = 0


def test_validations_of_different_models_of_one_dict_each_read_afresh(handler, raw):
    d = handler.create_dict("pair")
    d.update(a=1, b=2, c=3, d=4)
    for step in range(5):
        assert Left.model_validate(d) == Left(a=1, b=2)
        raw.hset("pair", '"c"', step)
        raw.hset("pair", '"a"', 1)
        assert Right.model_validate(d) == Right(c=step, d=4)
    # Validating the same model again reads afresh too, called from one place.
    seen = []
    for step in range(3):
        raw.hset("pair", '"a"', step)
        seen.append(Left.model_validate(d).a)
    assert seen == [0, 1, 2]


class StrictStatus(Status, extra="forbid"):
    pass


def test_pydantic_forbid_extra_reads_items_from_the_same_snapshot(handler, raw):
    d = handler.create_dict("status")
    d.update(ready=True, step=3)
    assert round_trips(raw, lambda: StrictStatus.model_validate(d)) == {"hgetall": 1}
    d["unknown"] = 1
    with pytest.raises(pydantic.ValidationError, match="unknown"):
        StrictStatus.model_validate(d)


def test_unencodable_values_write_nothing(handler, raw):
    d = handler.create_dict("d")
    d["keep"] = 1
    with pytest.raises(TypeError):
        d["x"] = object()
    with pytest.raises(TypeError):
        d.update({"a": 1, "b": {1, 2}, "c": 3})
    with pytest.raises(TypeError):
        d.update(a=1, b=b"bytes")
    with pytest.raises(ValueError, match=r"[Cc]ircular"):
        loop: list = []
        loop.append(loop)
        d["loop"] = loop
    with pytest.raises(TypeError):
        d[(1, object())] = 1
    with pytest.raises(TypeError):
        d.setdefault("s", object())
    assert raw.hgetall("d") == {b'"keep"': b"1"}


def test_structure_keys_must_be_str(handler):
    with pytest.raises(TypeError, match="key must be str"):
        handler.create_dict(b"bytes")
    with pytest.raises(TypeError):
        handler.create_dict(1)


def test_a_key_holding_another_type(handler, raw):
    raw.set("s", "string")
    d = handler.create_dict("s")
    for op in (lambda: d["a"], lambda: d.to_dict(), lambda: len(d), lambda: d.update(a=1)):
        with pytest.raises(CacheResponseError, match="WRONGTYPE") as err:
            op()
        assert '"s"' in str(err.value)
    assert raw.get("s") == b"string"


def test_values_that_are_not_json_on_the_server(handler, raw):
    raw.hset("d", '"a"', "not json")
    with pytest.raises(ValueError):
        handler.create_dict("d")["a"]


def test_bulk_reads_share_key_strings_safely(handler):
    """One HGETALL decodes every value with one key cache: many distinct keys
    (colliding in its slots), repeated keys and escaped keys all come back as
    json.loads gives them, on the server and in strict memory."""
    records = {
        f"r{i}": {f"k{i % 97}": i, "shared": [i, {"k0": i}], "é\\n" * (i % 3): {f"k{i}": None}}
        for i in range(300)
    }
    expected = json.loads(json.dumps(records))
    for h in (handler, InMemoryCacheHandler(strict=True)):
        d = h.create_dict("bulk")
        d.update(records)
        assert d.to_dict() == expected
        assert dict(d.items()) == expected
        lst = h.create_list("bulk-list")
        lst.extend(records.values())
        assert lst.to_list() == list(expected.values())


def test_documents_read_again_are_fresh_and_independent(handler):
    """A document read before is copied from a decoded template
    (codec/memo.rs): every read must still be a new tree, equal to what
    json.loads gives, with its own containers and its own NaN."""
    doc = {
        "name": "node_1",
        "status": {"ready": True, "steps": [1, 2, {"deep": [3.5, None]}]},
        "tags": ["a", 1, [], {}],
        "nan": float("nan"),
    }
    text = encode_json(doc)
    d = handler.create_dict("memo")
    d["k"] = doc
    lst = handler.create_list("memo-list")
    lst.extend([doc, doc])
    reads = [d["k"] for _ in range(4)] + [d.to_dict()["k"], *lst, lst[1], *lst.to_list()]
    for read in reads:
        assert encode_json(read) == text
    containers = [
        lambda r: r,
        lambda r: r["status"],
        lambda r: r["status"]["steps"],
        lambda r: r["status"]["steps"][2],
        lambda r: r["status"]["steps"][2]["deep"],
        lambda r: r["tags"],
        lambda r: r["tags"][2],
        lambda r: r["tags"][3],
        lambda r: r["nan"],
    ]
    for path in containers:
        assert len({id(path(r)) for r in reads}) == len(reads)
    mutated = d["k"]
    mutated["status"]["steps"][2]["deep"].append(9)
    mutated["tags"][2].append(1)
    mutated["tags"][3]["x"] = 1
    mutated["new"] = 1
    assert encode_json(d["k"]) == text
    assert encode_json(lst[0]) == text
