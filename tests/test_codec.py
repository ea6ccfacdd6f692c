import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitbc_p2p.codec import MAX_DEPTH, decode, encode
from aitbc_p2p.exceptions import CodecError

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=64) | st.text(max_size=32),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@given(values)
def test_roundtrip_is_canonical(value):
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


def test_map_keys_sorted_canonically():
    assert encode({"bb": 1, "a": 2}) == encode({"a": 2, "bb": 1})


@pytest.mark.parametrize(
    "data",
    [
        b"\x18\x01",  # integer 1 in a non-minimal two-byte form
        bytes.fromhex("a2616202616101"),  # map with keys out of canonical order
        encode(1) + b"\x00",  # trailing bytes
        b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # a float
        cbor2.dumps(cbor2.CBORTag(42, b"x")),  # a tag
        b"\x9f\x01\xff",  # indefinite-length array
        b"",
        b"\xff",
        b"\xa1\x01\x02",  # non-text map key
    ],
)
def test_rejects_non_canonical_or_disallowed(data):
    with pytest.raises(CodecError):
        decode(data)


def test_rejects_oversized_input():
    with pytest.raises(CodecError, match="exceeds"):
        decode(encode(b"x" * 100), max_size=50)


def test_rejects_deep_nesting():
    deep: list = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(CodecError, match="deeper"):
        encode(deep)
    with pytest.raises(CodecError):
        decode(cbor2.dumps(deep))


@pytest.mark.parametrize("value", [1.5, {1: 2}, 2**64, -(2**64) - 1, object()])
def test_encode_refuses_disallowed_values(value):
    with pytest.raises(CodecError):
        encode(value)


@pytest.mark.parametrize(
    ("hex_data", "tag"),
    [
        ("c11a514b67b0", 1),  # epoch datetime: cbor2 would build a datetime
        ("c249010000000000000000", 2),  # bignum: an integer past 64 bits
        ("d86400", 100),  # epoch date
        ("d8236161", 35),  # a regular expression: cbor2 would compile a stranger's pattern
        ("d9010280", 258),  # a set
        ("d9d9f7a0", 55799),  # self-described CBOR: cbor2 would strip it silently
        ("da0001869f00", 99999),  # a tag no decoder knows
        ("d81843a0", 24),  # embedded CBOR
    ],
)
def test_every_tag_is_refused_by_number_before_any_decoder_runs(hex_data, tag):
    with pytest.raises(CodecError, match=f"CBOR tag {tag} not allowed"):
        decode(bytes.fromhex(hex_data))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 100_000])
def test_deep_nesting_is_refused_without_recursing(depth):
    data = b"\x81" * depth + b"\x00"
    with pytest.raises(CodecError):
        decode(data, max_size=len(data))
    data = b"\xa1\x61a" * depth + b"\x00"  # maps, too
    with pytest.raises(CodecError):
        decode(data, max_size=len(data))


def test_duplicate_map_keys_are_refused():
    with pytest.raises(CodecError, match="Duplicate"):
        decode(bytes.fromhex("a2616101616101"))


def test_frames_come_out_whole_whatever_the_chunks_and_an_oversized_one_is_refused():
    from aitbc_p2p.codec.framing import FrameBuffer, frame, frame_size

    stream = frame(b"one") + frame(b"") + frame(b"x" * 300)
    buf = FrameBuffer(max_size=1000)
    out = []
    for i in range(len(stream)):  # one byte at a time
        buf.feed(stream[i : i + 1])
        while (body := buf.next()) is not None:
            out.append(body)
    assert out == [b"one", b"", b"x" * 300] and buf.next() is None
    big = FrameBuffer(max_size=10)
    big.feed(frame(b"y" * 11))
    with pytest.raises(CodecError, match="exceeds 10"):
        big.next()
    with pytest.raises(CodecError):
        frame_size(b"\x00\x00", 10)  # a short header


def test_the_field_readers_bound_and_type_each_field_exactly():
    from aitbc_p2p.codec import fields

    obj = {"n": 5, "b": True, "h": b"\x00" * 32, "short": b"\x00" * 31, "l": [1, 2, 3], "neg": -1}
    assert fields.uint(obj, "n", low=5, high=5) == 5
    with pytest.raises(fields.FieldOutOfRange) as out:
        fields.uint(obj, "n", low=6)
    assert out.value.field == "n" and isinstance(out.value, CodecError)
    assert fields.uint(obj, "neg", low=-1, high=10) == -1  # a signed range where a caller asks
    for name in ("b", "h", "missing"):
        with pytest.raises(CodecError) as wrong:
            fields.uint(obj, name)
        assert not isinstance(wrong.value, fields.FieldOutOfRange)  # a wrong type is no range error
    assert fields.hash32(obj, "h") == b"\x00" * 32
    with pytest.raises(CodecError, match="32 bytes"):
        fields.hash32(obj, "short")
    assert fields.listing(obj, "l", max_items=3) == [1, 2, 3]
    with pytest.raises(CodecError, match="more than 2"):
        fields.listing(obj, "l", max_items=2)
