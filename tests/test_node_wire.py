"""The node's protocol messages (node/wire.py): what each parser takes and refuses."""

import pytest

from aitbc_p2p.codec import encode
from aitbc_p2p.exceptions import CodecError
from aitbc_p2p.node.wire import (
    MAX_LISTEN,
    Status,
    decode_consensus_message,
    decode_sync_request,
    encode_sync_request,
)

G, H = b"\x01" * 32, b"\x02" * 32
STATUS = {"chain_id": "ait-devnet", "genesis": G, "height": 7, "head": H, "listen": ["/ip4/1.2.3.4/tcp/1/p2p/x"]}


def test_a_status_round_trips_and_its_bytes_are_the_handshake_s():
    status = Status("ait-devnet", G, 7, H, ("/ip4/1.2.3.4/tcp/1/p2p/x",))
    assert status.encode() == encode(STATUS)  # the bytes every peer sent before this module
    assert Status.decode(status.encode()) == status
    assert Status.decode(encode({k: v for k, v in STATUS.items() if k != "listen"})).listen == ()


@pytest.mark.parametrize(
    "change",
    [
        {"height": -1},
        {"height": True},
        {"height": "7"},
        {"height": 2**64},
        {"genesis": "01" * 32},
        {"genesis": b"\x01" * 33},
        {"head": None},
        {"chain_id": 5},
        {"chain_id": "x" * 65},
        {"listen": "/ip4/1.2.3.4/tcp/1"},
        {"extra": 1},
    ],
)
def test_a_malformed_status_is_refused(change):
    with pytest.raises(CodecError):
        Status.decode(encode({**STATUS, **change}))


def test_a_status_missing_a_field_or_not_a_map_is_refused():
    for obj in ({k: v for k, v in STATUS.items() if k != "height"}, [1, 2], 7):
        with pytest.raises(CodecError):
            Status.decode(encode(obj))
    with pytest.raises(CodecError):
        Status.decode(b"\xff\x00")


def test_a_status_reads_only_so_many_addresses_and_only_text():
    many = [f"/ip4/1.2.3.4/tcp/{i}/p2p/x" for i in range(100)]
    assert len(Status.decode(encode({**STATUS, "listen": many})).listen) == MAX_LISTEN
    assert Status.decode(encode({**STATUS, "listen": [1, b"x", "/ip4/1.2.3.4/tcp/1/p2p/x"]})).listen == (
        "/ip4/1.2.3.4/tcp/1/p2p/x",
    )


def test_sync_requests_are_strict():
    assert decode_sync_request(encode_sync_request(3, 9)) == (3, 9)
    for bad in ({"from": "3", "to": 9}, {"from": -1, "to": 9}, {"from": 3}, {"from": 3, "to": 9, "x": 1}, [3, 9]):
        with pytest.raises(CodecError):
            decode_sync_request(encode(bad))


def test_the_consensus_envelope_is_a_one_key_map_of_a_vote_or_a_proposal():
    assert decode_consensus_message(encode({"vote": {"a": 1}})) == {"vote": {"a": 1}}
    assert decode_consensus_message(encode({"proposal": [1]})) == {"proposal": [1]}
    for bad in ({"vote": 1, "proposal": 2}, {"other": 1}, {}, [1], b"vote"):
        with pytest.raises(CodecError):
            decode_consensus_message(encode(bad))
