"""secp256k1 keys, ``aitbc1...`` bech32m addresses and recoverable signatures.

A signature is 65 bytes ``r || s || v`` (v in {0, 1}), low-S only, over
``SHA-256(canonical_cbor([domain_tag, chain_id, body]))``. One domain tag per
object kind, so a signature made for one kind never verifies as another.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

import coincurve
from bech32m.codecs import DecodeError, Encoding, bech32_decode, bech32_encode, convertbits

from aitbc_p2p.codec import encode, head
from aitbc_p2p.exceptions import BadSignature, CryptoError
from aitbc_p2p.types import Address, Hash32

ADDRESS_HRP = "aitbc"
SIGNATURE_SIZE = 65
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2


class Domain(enum.StrEnum):
    """Signature domain tags, one per signed object kind."""

    TX = "aitbc/tx/1"
    BLOCK = "aitbc/block/1"
    VOTE = "aitbc/vote/1"
    PROPOSAL = "aitbc/proposal/1"
    OFFER = "aitbc/offer/1"
    BID = "aitbc/bid/1"
    RECEIPT = "aitbc/receipt/1"
    ACK = "aitbc/ack/1"
    """A delivery acknowledgement: the client (or its agent) holds a job's result."""
    RELEASE = "aitbc/release/1"
    """A provider's release of an escrow: it will not claim this attempt of the job."""
    PROVIDER = "aitbc/provider/1"


def sha256(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


def signing_digest(domain: Domain, chain_id: str, body: Any, *, checked: bool = False) -> Hash32:
    """The 32-byte digest that a signature of ``body`` under ``domain`` covers.

    ``checked=True`` when ``body`` was decoded by the strict decoder (skips the type walk).
    """
    return sha256(encode([str(domain), chain_id, body], check=not checked))


def signing_digest_encoded(domain: Domain, chain_id: str, body_cbor: bytes) -> Hash32:
    """:func:`signing_digest` of a body given as its canonical CBOR bytes.

    The preimage is a 3-array of two text strings and the body, so it is assembled from
    the bytes a transaction arrived in, without building or encoding the body again.
    """
    return sha256(b"\x83" + _text(str(domain)) + _text(chain_id) + body_cbor)


def _text(value: str) -> bytes:
    data = value.encode()
    return head(3, len(data)) + data


@functools.lru_cache(maxsize=1 << 16)
def address_from_public_key(public_key: bytes) -> Address:
    """``aitbc1`` + bech32m of the first 20 bytes of SHA-256(compressed public key).

    Cached: bech32m is pure Python and the same keys sign again and again.
    """
    if len(public_key) != 33:
        raise CryptoError("expected a 33-byte compressed public key")
    payload = sha256(public_key)[:20]
    return Address(bech32_encode(ADDRESS_HRP, bytes(convertbits(payload, 8, 5)), Encoding.BECH32M))


def validate_address(text: str) -> Address:
    """Return ``text`` as an :data:`Address` if it is a well-formed ``aitbc1`` bech32m address.

    Raises:
        CryptoError: wrong prefix, bad checksum, wrong encoding or wrong length.
    """
    if not isinstance(text, str):
        raise CryptoError(f"address must be a lowercase string: {text!r}")
    _address_payload(text)
    return Address(text)


@functools.lru_cache(maxsize=1 << 16)
def _address_payload(text: str) -> bytes:
    """The 20 bytes a well-formed address encodes (cached: bech32m is pure Python)."""
    if text != text.lower():
        raise CryptoError(f"address must be a lowercase string: {text!r}")
    try:
        hrp, data, spec = bech32_decode(text)
        payload = bytes(convertbits(data, 5, 8, pad=False))
    except DecodeError as e:
        raise CryptoError(f"invalid bech32m address: {text!r}") from e
    if hrp != ADDRESS_HRP or spec != Encoding.BECH32M or len(payload) != 20:
        raise CryptoError(f"not an aitbc address: {text!r}")
    return payload


def is_key_of(public_key: bytes, address: str) -> bool:
    """Whether ``address`` is the address of ``public_key`` (33 bytes, compressed).

    Compares the key's hash with the 20 bytes the address encodes, so no address is
    encoded: bech32m encoding costs about 30 us in pure Python, nearly as much as
    recovering the key, and a peer sees most senders for the first time. A well-formed
    lowercase address and its payload determine each other, so this agrees with
    ``address_from_public_key(public_key) == address``; a malformed address is no key's.
    """
    try:
        return sha256(public_key)[:20] == _address_payload(address)
    except CryptoError:
        return False


def clear_address_caches() -> None:
    """Forget every address decoded and every key's address derived so far (benchmarks
    use it to measure a peer that sees its senders for the first time)."""
    _address_payload.cache_clear()
    address_from_public_key.cache_clear()


class PrivateKey:
    """A secp256k1 private key. The same key is a peer's libp2p identity and wallet."""

    __slots__ = ("_key", "address", "public_key")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise CryptoError("a private key is 32 bytes")
        try:
            self._key = coincurve.PrivateKey(secret)
        except ValueError as e:
            raise CryptoError("invalid secp256k1 private key") from e
        self.public_key: bytes = self._key.public_key.format(compressed=True)
        self.address: Address = address_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError as e:
            raise CryptoError("private key hex is malformed") from e

    @property
    def secret(self) -> bytes:
        return bytes(self._key.secret)

    def sign_digest(self, digest: bytes) -> bytes:
        """A 65-byte recoverable, low-S signature of a 32-byte digest."""
        sig = bytes(self._key.sign_recoverable(digest, hasher=None))
        # libsecp256k1 always emits low-S; the check guards the invariant the spec relies on.
        assert int.from_bytes(sig[32:64], "big") <= _HALF_N
        return sig

    def sign(self, domain: Domain, chain_id: str, body: Any) -> bytes:
        return self.sign_digest(signing_digest(domain, chain_id, body))

    def __repr__(self) -> str:
        return f"PrivateKey(address={self.address})"


def recover_address(digest: bytes, signature: bytes) -> Address:
    """The address whose key made ``signature`` over ``digest``.

    Raises:
        BadSignature: wrong length, high-S, bad recovery id, or no key recovers.
    """
    return address_from_public_key(recover_public_key(digest, signature))


def recover_public_key(digest: bytes, signature: bytes) -> bytes:
    """The compressed public key that made ``signature`` over ``digest``.

    Raises:
        BadSignature: wrong length, high-S, bad recovery id, or no key recovers.
    """
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise BadSignature("signature must be 65 bytes")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < s <= _HALF_N:
        raise BadSignature("signature S is not in the low half of the curve order")
    if signature[64] not in (0, 1):
        raise BadSignature("recovery id must be 0 or 1")
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except (ValueError, TypeError) as e:
        raise BadSignature("no public key recovers from this signature") from e
    return bytes(public.format(compressed=True))


def verify(domain: Domain, chain_id: str, body: Any, signature: bytes, signer: Address) -> None:
    """Raise :class:`BadSignature` unless ``signer`` signed ``body`` under ``domain``."""
    if not is_key_of(recover_public_key(signing_digest(domain, chain_id, body), signature), signer):
        raise BadSignature(f"signature is not by {signer}")


def holder_of(given: str, secrets_by_name: Mapping[str, str]) -> str | None:
    """The name whose secret (an API key) ``given`` is, else None. Compared with every
    secret, each in constant time, so the answer's timing says nothing of which matched
    or how much of one did."""
    found = None
    for name, secret in secrets_by_name.items():
        if hmac.compare_digest(given.encode(), secret.encode()):
            found = name
    return found
