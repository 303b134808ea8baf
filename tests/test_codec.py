"""The codec is json.dumps(sort_keys=True) / json.loads, byte for byte.

Every test compares our result (or our exception: type, message, position)
with the standard library's on the same input.
"""

from __future__ import annotations

import collections
import enum
import json
import math
import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madsci_cache_rs import cache_clear, cache_usage, decode_json, encode_json


def reference_encode(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def outcome(func, arg):
    """What a call produced: its result, or its exception's type and text."""
    try:
        return ("ok", func(arg))
    except json.JSONDecodeError as exc:
        return ("error", json.JSONDecodeError, exc.msg, exc.pos, exc.lineno, exc.colno)
    except Exception as exc:
        return ("error", type(exc), str(exc))


def same(a: object, b: object) -> bool:
    """Equal including types, float bits and key order (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def assert_same_encoding(value: object) -> None:
    ours = outcome(encode_json, value)
    theirs = outcome(reference_encode, value)
    assert ours == theirs, value


def assert_same_decoding(text: str | bytes) -> None:
    ours = outcome(decode_json, text)
    theirs = outcome(json.loads, text)
    if ours[0] == "ok" and theirs[0] == "ok":
        assert same(ours[1], theirs[1]), text
    else:
        assert ours == theirs, text


# -- generated values --------------------------------------------------------


def examples(n: int) -> int:
    """``n`` generated examples, or at most MADSCI_CACHE_RS_TEST_EXAMPLES: the
    quick suites on the other Pythons (tests/wheels.sh) take fewer, while the
    hand-picked corpora below always run whole."""
    cap = os.environ.get("MADSCI_CACHE_RS_TEST_EXAMPLES")
    return min(n, int(cap)) if cap else n


any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)


def dicts_of(children):
    # One key type per dict: a mixture is an error case, tested separately.
    return st.one_of(
        st.dictionaries(any_text, children, max_size=6),
        st.dictionaries(st.integers(), children, max_size=6),
        st.dictionaries(st.floats(allow_nan=False), children, max_size=6),
        st.dictionaries(st.booleans(), children, max_size=2),
        st.dictionaries(st.none(), children, max_size=1),
    )


json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.lists(children, max_size=4).map(tuple)
        | dicts_of(children)
    ),
    max_leaves=40,
)


@settings(max_examples=examples(3000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_encode_matches_json_dumps(value):
    assert_same_encoding(value)


@settings(max_examples=examples(3000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_decode_matches_json_loads(value):
    text = json.dumps(value)
    assert_same_decoding(text)
    assert_same_decoding(text.encode("utf-8", "surrogatepass"))
    assert_same_decoding(json.dumps(value, ensure_ascii=False, indent=1))


@settings(max_examples=examples(3000), deadline=None)
@given(json_values, st.data())
def test_decode_errors_match_json_on_damaged_text(value, data):
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    if text:
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(
            st.sampled_from(
                [
                    "",
                    ",",
                    '"',
                    "\\",
                    "\\u",
                    "]",
                    "}",
                    ":",
                    " ",
                    "\x01",
                    "é",
                    "\ud800",
                    "1",
                    "e",
                    "-",
                    ".",
                ]
            )
        )
        text = text[:at] + insert + text[at + cut :]
    assert_same_decoding(text)


@settings(max_examples=examples(2000), deadline=None)
@given(
    st.text(
        st.sampled_from('[]{}":,0123456789.eE+-\\/ubfnrtINaif \t\n\x1fé\ud83d\ude00'), max_size=30
    )
)
def test_decode_matches_json_on_arbitrary_text(text):
    assert_same_decoding(text)


def test_float_layout_over_random_bit_patterns():
    rng = random.Random(20261125)
    for _ in range(100_000):
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        assert encode_json(value) == reference_encode(value)


# -- hand-picked hard cases --------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


class MyFloat(float):
    def __repr__(self) -> str:
        return "not this"


class MyInt(int):
    def __repr__(self) -> str:
        return "not this"


class MyList(list):
    pass


class MyDict(dict):
    pass


HARD_VALUES = [
    None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**100, Colour.RED, MyInt(5),
    0.0, -0.0, 1e-05, 1.5e-05, 1e16, 1e15, 1e22, 1e-7, 5e-324, 1.7976931348623157e308,
    0.1, 1 / 3, float("nan"), float("inf"), float("-inf"), MyFloat(2.5),
    "", "plain", "é", "€", "😀", "\ud800", "\udfff", "\ud83d", "a\ud800b", "\x00\x1f\x7f",
    "\"\\/\b\f\n\r\t", Mood.HAPPY, "\u2028\u2029", "\U0010ffff",
    [], (), [1, (2, 3)], {}, {"b": 1, "a": 2, "A": 3, "é": 4, "😀": 5, "\ud800": 6},
    {2: "a", 10: "b", -1: "c"}, {1.5: 1, 0.5: 2}, {True: 1, False: 2}, {None: 1},
    {1: "int", 2.5: "float"}, {True: 1, 2: 2}, {Colour.RED: "x"},
    MyList([1, 2]), MyDict(b=1, a=2), collections.OrderedDict([("b", 1), ("a", 2)]),
    {float("nan"): 1}, {float("inf"): 1, 1.0e300: 2},
    {"nested": {"deep": [{"x": [1.5, None, True, "s"]}]}},
]  # fmt: skip

ERROR_VALUES = [
    {1: "a", "b": 2},  # keys that cannot be sorted
    {(1, 2): 1},  # a key json refuses
    {None: 1, "a": 2},
    object(),
    {1, 2},
    b"bytes",
    [1, object()],
    {"a": 1j},
    {"k": [1, 2, {3}]},
    10**5000,  # beyond int's max str digits
]


@pytest.mark.parametrize("value", HARD_VALUES, ids=repr)
def test_hard_values_encode_like_json(value):
    assert_same_encoding(value)
    assert_same_decoding(reference_encode(value))


@pytest.mark.parametrize("value", ERROR_VALUES, ids=lambda v: type(v).__name__)
def test_errors_match_json(value):
    ours = outcome(encode_json, value)
    assert ours[0] == "error"
    assert ours == outcome(reference_encode, value)


def test_circular_references_are_value_errors():
    loop: list = []
    loop.append(loop)
    cycle: dict = {}
    cycle["self"] = cycle
    for value in (loop, cycle, [1, {"a": loop}]):
        assert outcome(encode_json, value) == outcome(reference_encode, value)
        assert outcome(encode_json, value)[1] is ValueError


def test_shared_but_not_circular_objects_encode():
    shared = [1, 2]
    assert_same_encoding([shared, shared, {"a": shared}])


@pytest.mark.parametrize("depth", [50, 500, 100_000])
def test_deep_nesting_is_a_clean_error_or_identical(depth):
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    assert outcome(encode_json, nested) == outcome(reference_encode, nested)
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        assert outcome(decode_json, text) == outcome(json.loads, text)


def test_recursion_errors_name_what_was_nested():
    assert outcome(decode_json, "[" * 100_000)[2].endswith("JSON array from a unicode string")
    assert outcome(decode_json, '{"a":' * 100_000)[2].endswith("JSON object from a unicode string")


HARD_TEXTS = [
    "", " ", "1", "-0", "-0.0", "01", "1.", "1e", "1e+", "1E-2", "-", "--1", "1.5e400", "-1e400",
    "123456789012345678", "1234567890123456789", "-9223372036854775809", "1" * 4301,
    "NaN", "-NaN", "Infinity", "-Infinity", "infinity", "nul", "null ", " true", "falsey",
    '"abc', '"\\u12"', '"\\u1234', '"\\u12345"', '"\\ud800\\u12"', '"\\ud800\\udc00"',
    '"\\ud800\\u0041"', '"\\udc00\\ud800"', '"\\ud800"', '"\\x"', '"\\', '"\\ud800\\',
    '"a\x01"', '"a\x7f"', '"\t"', '"é\\q"', '"😀\\u00e9"', "[1,]", "[1 2]", "[", "]",
    '{"a":1,}', '{"a" 1}', '{"a":', "{", "{1:2}", '{"a":1 "b":2}', '{"a":1,"a":2,"b":3}',
    "[1] x", "\ufeff[1]", "\u00a0[1]", "[\n1,\n2\n", '{"a":\n\n  [1, }',
    '"\\/\\b\\f\\n\\r\\t\\"\\\\"', "\ud800", '"\ud800"', '["\udfff", 1, "x"]',
]  # fmt: skip


@pytest.mark.parametrize("text", HARD_TEXTS, ids=repr)
def test_hard_texts_decode_like_json(text):
    assert_same_decoding(text)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert_same_decoding(encoded)
    assert_same_decoding(bytearray(encoded))


@pytest.mark.parametrize(
    "encoding",
    ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"],
)
def test_bytes_in_any_json_encoding(encoding):
    for text in ['{"a": [1, "é😀"]}', "12", '"x"', "[1,"]:
        assert_same_decoding(text.encode(encoding))


def test_undecodable_bytes_and_wrong_types():
    for raw in [b"\xff\xfe\xfd", b'"\xed\xa0\x80"', b"\x80", b"1\x00"]:
        assert_same_decoding(raw)
    for wrong in [memoryview(b"1"), 1, None, ["1"]]:
        ours = outcome(decode_json, wrong)
        assert ours[0] == "error"
        assert ours == outcome(json.loads, wrong)


def test_int_digit_limit_follows_the_interpreter():
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no integer string conversion limit")
    old = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(640)
        assert outcome(encode_json, 10**700) == outcome(reference_encode, 10**700)
        assert outcome(decode_json, "1" * 700) == outcome(json.loads, "1" * 700)
        sys.set_int_max_str_digits(0)
        assert_same_encoding(10**5000)
        assert_same_decoding("9" * 5000)
    finally:
        sys.set_int_max_str_digits(old)


def test_decoded_strings_and_containers_are_fresh_objects():
    text = '{"a": [1, 2], "b": {"c": "d"}}'
    first, second = decode_json(text), decode_json(text)
    assert first == second
    assert first["a"] is not second["a"]
    first["a"].append(3)
    assert second["a"] == [1, 2]


# -- small thread stacks -----------------------------------------------------

DEEP_ON_SMALL_STACK = """
import json, sys, threading
from madsci_cache_rs import decode_json, encode_json

threading.stack_size(256 * 1024)
doc = '{"a": ' * 450 + "[" * 450 + "1" + "]" * 450 + "}" * 450
value = json.loads(doc)
results = []
def work():
    results.append(decode_json(doc) == value)
    results.append(encode_json(value) == doc)
    # Past every version's limit: from 3.12 nesting is counted against the C
    # recursion limit, which sys.getrecursionlimit() does not show.
    try:
        decode_json("[" * 100_000)
    except RecursionError:
        results.append(True)
thread = threading.Thread(target=work)
thread.start()
thread.join()
assert results == [True, True, True], results
"""


def test_deep_documents_on_a_small_thread_stack():
    # A stack overflow kills the interpreter: hence a child process.
    done = subprocess.run(
        [sys.executable, "-c", DEEP_ON_SMALL_STACK], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (done.returncode, done.stderr)


SERVER_READS_ON_SMALL_STACK = """
import json, sys, threading
from madsci_cache_rs import PyCacheHandler, cache_clear

threading.stack_size(256 * 1024)
doc = '{"a": ' * 450 + "[" * 450 + "1" + "]" * 450 + "}" * 450
value = json.loads(doc)
stored = PyCacheHandler.from_url(sys.argv[1]).create_dict("deep")
results = []
def work():
    # Parsed, parsed and kept, copied; then the kept copy is let go.
    results.extend(stored["doc"] == value for _ in range(3))
    cache_clear()
    stored["doc"] = value
    results.append(stored["doc"] == value)
thread = threading.Thread(target=work)
thread.start()
thread.join()
assert results == [True] * 4, results
"""


def test_deep_stored_documents_on_a_small_thread_stack(server, raw):
    doc = '{"a": ' * 450 + "[" * 450 + "1" + "]" * 450 + "}" * 450
    raw.hset("deep", json.dumps("doc"), doc)
    done = subprocess.run(
        [sys.executable, "-c", SERVER_READS_ON_SMALL_STACK, server.url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)


# -- stored bytes are read as pottery reads them -------------------------------

STORED_BYTES = [
    b'\xef\xbb\xbf{"a": 1}',
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-16-be"),
    '{"a": 1}'.encode("utf-16-le"),
    '{"a": 1}'.encode("utf-32"),
    b"1\x00",
    b"\x00",
    b"\xff",
    b'{"a": "\xff"}',
    b'"\xed\xa0\x80"',
    b'"\\ud800"',
    b'"caf\xc3\xa9"',
    b"  1  ",
    b"[1, 2, 3, 4, 5, 6, 7, 8]\x00",
    b'{"name": "caf\xc3\xa9", "tags": ["a", 1]}',
    b'{"name": "caf\xe9", "tags": ["a", 1]}',
]


def read_outcome(read):
    try:
        return ("ok", read())
    except json.JSONDecodeError as exc:
        return ("error", json.JSONDecodeError, exc.msg, exc.pos)
    except Exception as exc:
        return ("error", type(exc), str(exc))


@pytest.mark.filterwarnings("ignore::pottery.InefficientAccessWarning")
@pytest.mark.parametrize("stored", STORED_BYTES, ids=repr)
def test_stored_bytes_read_as_pottery_reads_them(handler, raw, stored):
    import pottery

    field = json.dumps("f")
    for key in ("theirs", "ours"):
        raw.hset(key, field, stored)
        raw.rpush(key + "-list", stored)
    theirs_dict = pottery.RedisDict(redis=raw, key="theirs")
    theirs_list = pottery.RedisList(redis=raw, key="theirs-list")
    ours_dict = handler.create_dict("ours")
    ours_list = handler.create_list("ours-list")
    # Three reads: parsed, parsed to be kept, copied (the memo's paths).
    for _ in range(3):
        expected = read_outcome(lambda: theirs_dict["f"])
        assert read_outcome(lambda: ours_dict["f"]) == expected
        assert read_outcome(lambda: ours_list[0]) == read_outcome(lambda: theirs_list[0])
        assert read_outcome(lambda: ours_dict.to_dict()) == read_outcome(theirs_dict.to_dict)


# -- the decode memo's Python face -----------------------------------------------


def test_cache_usage_counts_kept_objects_and_clears(handler, raw):
    cache_clear()
    assert cache_usage() == 0
    doc = json.dumps([{"step": i, "name": f"step {i}"} for i in range(100)])
    raw.hset("docs", json.dumps("d"), doc)
    stored = handler.create_dict("docs")
    stored["d"]
    seen = cache_usage()
    assert len(doc) < seen < 2 * len(doc)
    stored["d"]
    # 100 dicts and their strings: far more than the text.
    kept = cache_usage() - seen
    assert kept > 10 * len(doc), kept
    assert stored["d"] == json.loads(doc)
    cache_clear()
    assert cache_usage() == 0
    assert stored["d"] == json.loads(doc)


@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_a_list_changed_while_encoded_encodes_as_json_does(change):
    # A dict subclass's items() is user code run mid-encoding; the list
    # holding it is read again at every step, by json and by us.
    def make():
        class Meddles(dict):
            def items(self):
                if change == "shrink":
                    del target[1:]
                else:
                    target.append("late")
                return super().items()

        target = [[Meddles(a=1)], 2, 3]
        return target

    assert encode_json(make()) == json.dumps(make(), sort_keys=True)
