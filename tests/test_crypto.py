import json

import pytest
from bech32m.codecs import Encoding, bech32_encode, convertbits

from aitbc_p2p.crypto import (
    Domain,
    PrivateKey,
    load_key_file,
    recover_address,
    save_key_file,
    sha256,
    signing_digest,
    verify,
)
from aitbc_p2p.crypto.keys import _SECP256K1_N, is_key_of, recover_public_key, validate_address
from aitbc_p2p.exceptions import BadSignature, CryptoError, KeyFileError


def test_address_format(alice):
    assert alice.address.startswith("aitbc1")
    assert validate_address(alice.address) == alice.address


def test_sign_and_recover(alice):
    sig = alice.sign(Domain.TX, "ait-devnet", {"x": 1})
    assert len(sig) == 65
    verify(Domain.TX, "ait-devnet", {"x": 1}, sig, alice.address)


def test_domain_separation(alice):
    sig = alice.sign(Domain.TX, "ait-devnet", {"x": 1})
    with pytest.raises(BadSignature):
        verify(Domain.BID, "ait-devnet", {"x": 1}, sig, alice.address)


def test_chain_separation(alice):
    sig = alice.sign(Domain.TX, "ait-devnet", {"x": 1})
    with pytest.raises(BadSignature):
        verify(Domain.TX, "other-chain", {"x": 1}, sig, alice.address)


def test_high_s_rejected(alice):
    digest = signing_digest(Domain.TX, "ait-devnet", {"x": 1})
    sig = alice.sign_digest(digest)
    s = int.from_bytes(sig[32:64], "big")
    high = sig[:32] + (_SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    with pytest.raises(BadSignature, match="low half"):
        recover_address(digest, high)


@pytest.mark.parametrize("sig", [b"", b"\x00" * 64, b"\x01" * 64 + b"\x05"])
def test_malformed_signatures(sig):
    with pytest.raises(BadSignature):
        recover_address(b"\x00" * 32, sig)


def test_rejects_bad_addresses(alice):
    payload = bytes(convertbits(b"\x01" * 20, 8, 5))
    bad = [
        alice.address[:-1] + ("q" if alice.address[-1] != "q" else "p"),  # checksum
        bech32_encode("aitbc", payload, Encoding.BECH32),  # bech32, not bech32m
        bech32_encode("btc", payload, Encoding.BECH32M),  # wrong prefix
        bech32_encode("aitbc", bytes(convertbits(b"\x01" * 19, 8, 5)), Encoding.BECH32M),  # wrong length
        alice.address.upper(),
        "",
    ]
    for text in bad:
        with pytest.raises(CryptoError):
            validate_address(text)


def test_is_key_of_agrees_with_the_encoded_address(alice, bob):
    """Signature checks compare a key's hash with the address's payload instead of
    encoding the key's address: the two must agree, and no other spelling of the same
    20 bytes (other prefix, bech32 instead of bech32m, upper case, bad checksum) passes."""
    digest = signing_digest(Domain.TX, "ait-devnet", {"x": 1})
    key = recover_public_key(digest, alice.sign_digest(digest))
    assert key == alice.public_key
    assert is_key_of(key, alice.address) and recover_address(digest, alice.sign_digest(digest)) == alice.address
    assert not is_key_of(key, bob.address)
    assert not is_key_of(bob.public_key, alice.address)
    payload = bytes(convertbits(sha256(alice.public_key)[:20], 8, 5))
    assert bech32_encode("aitbc", payload, Encoding.BECH32M) == alice.address
    for other in (
        bech32_encode("btc", payload, Encoding.BECH32M),
        bech32_encode("aitbc", payload, Encoding.BECH32),
        alice.address.upper(),
        alice.address[:-1] + ("q" if alice.address[-1] != "q" else "p"),
        alice.address + "q",
        "",
    ):
        assert not is_key_of(key, other), other
        with pytest.raises(BadSignature):
            verify(Domain.TX, "ait-devnet", {"x": 1}, alice.sign_digest(digest), other)


def test_key_file_roundtrip(tmp_path, alice):
    path = tmp_path / "w.json"
    save_key_file(path, alice, "pw", scrypt_n=2**10)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key_file(path, "pw").address == alice.address
    with pytest.raises(KeyFileError, match="wrong password"):
        load_key_file(path, "nope")
    with pytest.raises(FileExistsError):
        save_key_file(path, alice, "pw")


def test_key_file_with_edited_address_fails(tmp_path, alice, bob):
    path = tmp_path / "w.json"
    save_key_file(path, alice, "pw", scrypt_n=2**10)
    doc = json.loads(path.read_text())
    doc["address"] = bob.address
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError):
        load_key_file(path, "pw")


def test_private_key_validation():
    with pytest.raises(CryptoError):
        PrivateKey(b"\x00" * 32)
    with pytest.raises(CryptoError):
        PrivateKey(b"\x01" * 31)


def test_digest_from_encoded_body_equals_digest_of_body(alice, bob):
    """Transactions verify from the body's received bytes; that digest must be the one
    the signer computed from the body value, for every kind of payload."""
    from aitbc_p2p.chain import Transaction
    from aitbc_p2p.crypto.keys import signing_digest_encoded
    from aitbc_p2p.testing import make_tx

    txs = [
        make_tx(alice, to=bob.address, amount=7),
        Transaction.create(alice, chain_id="ait-other", kind="stake", nonce=3, fee=10**6, payload={"amount": 2**63}),
    ]
    for tx in txs:
        received = Transaction.decode(tx.encode())
        assert received.body_raw and tx.encode().endswith(received.body_raw)
        assert signing_digest_encoded(Domain.TX, received.chain_id, received.body_raw) == signing_digest(
            Domain.TX, received.chain_id, received.body()
        )
        received.verify_signature()
