"""Encrypted wallet key files: scrypt key derivation + ChaCha20-Poly1305.

The file is JSON so that people can recognise it::

    {"version": 1, "address": "aitbc1...", "kdf": "scrypt",
     "kdf_params": {"n": 32768, "r": 8, "p": 1, "salt": "<hex>"},
     "cipher": "chacha20-poly1305", "nonce": "<hex>", "ciphertext": "<hex>"}

The address is authenticated as associated data, so a file whose address was edited
fails to decrypt instead of loading a key for another address.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from aitbc_p2p.crypto.keys import PrivateKey, validate_address
from aitbc_p2p.exceptions import CryptoError, KeyFileError
from aitbc_p2p.types import Address

KEYFILE_VERSION = 1
DEFAULT_SCRYPT_N = 2**15


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


def encrypt_key(key: PrivateKey, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> str:
    """The JSON text of an encrypted key file for ``key``."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    box = ChaCha20Poly1305(_derive(password, salt, scrypt_n, 8, 1))
    ciphertext = box.encrypt(nonce, key.secret, key.address.encode())
    doc = {
        "version": KEYFILE_VERSION,
        "address": key.address,
        "kdf": "scrypt",
        "kdf_params": {"n": scrypt_n, "r": 8, "p": 1, "salt": salt.hex()},
        "cipher": "chacha20-poly1305",
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }
    return json.dumps(doc, indent=2) + "\n"


def decrypt_key(text: str, password: str) -> PrivateKey:
    """Decrypt key file text.

    Raises:
        KeyFileError: unknown format or version, corrupt file, or wrong password.
    """
    try:
        doc = json.loads(text)
        if doc.get("version") != KEYFILE_VERSION or doc.get("kdf") != "scrypt":
            raise KeyFileError("unknown key file version or kdf")
        params = doc["kdf_params"]
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        if not (2**10 <= n <= 2**20 and r == 8 and p == 1):
            raise KeyFileError("key file scrypt parameters out of range")
        secret_key = _derive(password, bytes.fromhex(params["salt"]), n, r, p)
        secret = ChaCha20Poly1305(secret_key).decrypt(
            bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["ciphertext"]), doc["address"].encode()
        )
    except InvalidTag as e:
        raise KeyFileError("wrong password or corrupt key file") from e
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise KeyFileError(f"malformed key file: {e}") from e
    key = PrivateKey(secret)
    if key.address != doc["address"]:
        raise KeyFileError("key file address does not match its key")
    return key


def save_key_file(path: Path, key: PrivateKey, password: str, **kwargs: int) -> None:
    """Write an encrypted key file readable only by its owner (mode 0600), never overwriting."""
    text = encrypt_key(key, password, **kwargs)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_key_file(path: Path, password: str) -> PrivateKey:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read key file {path}: {e}") from e
    return decrypt_key(text, password)


def key_file_address(path: Path) -> Address:
    """The address a key file names in clear, without its password (for read-only
    commands: balance, history). It is checked as an address; that the file's key
    really is this address's is checked only when the key is decrypted.

    Raises:
        KeyFileError: the file is missing, unreadable or names no valid address.
    """
    try:
        doc = json.loads(Path(path).read_text())
        return validate_address(doc["address"])
    except FileNotFoundError as e:
        raise KeyFileError(f"no wallet at {path}; create one with 'aitbc wallet new'") from e
    except (OSError, ValueError, KeyError, TypeError, CryptoError) as e:
        raise KeyFileError(f"cannot read the address of key file {path}: {e}") from e
