"""Canonical CBOR (RFC 8949 section 4.2.1) with strict decoding. See specs/wire.md."""

from aitbc_p2p.codec.cbor import MAX_DEPTH, MAX_SIZE, decode, decode_record, encode, head

__all__ = ["MAX_DEPTH", "MAX_SIZE", "decode", "decode_record", "encode", "head"]
