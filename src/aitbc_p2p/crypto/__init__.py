"""Keys, addresses and domain-separated signatures (specs/wire.md, "Signatures")."""

from aitbc_p2p.crypto.keyfile import key_file_address, load_key_file, save_key_file
from aitbc_p2p.crypto.keys import (
    Domain,
    PrivateKey,
    address_from_public_key,
    recover_address,
    sha256,
    signing_digest,
    validate_address,
    verify,
)

__all__ = [
    "Domain",
    "PrivateKey",
    "address_from_public_key",
    "key_file_address",
    "load_key_file",
    "recover_address",
    "save_key_file",
    "sha256",
    "signing_digest",
    "validate_address",
    "verify",
]
