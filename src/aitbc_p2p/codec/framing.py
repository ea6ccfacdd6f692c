"""Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

The one framing of every byte stream the node speaks: request/response streams between
peers (specs/wire.md), and the pipes to the compute worker process. A reader refuses a
length over its limit before reading (or allocating) the body.
"""

from __future__ import annotations

from aitbc_p2p.exceptions import CodecError

HEADER = 4


def frame(data: bytes) -> bytes:
    """``data`` with its length in front."""
    return len(data).to_bytes(HEADER, "big") + data


def frame_size(header: bytes, max_size: int) -> int:
    """The body length a frame header announces. Raises CodecError past ``max_size``."""
    if len(header) != HEADER:
        raise CodecError(f"a frame header is {HEADER} bytes, not {len(header)}")
    size = int.from_bytes(header, "big")
    if size > max_size:
        raise CodecError(f"frame of {size} bytes exceeds {max_size}")
    return size


class FrameBuffer:
    """Frames out of a byte stream that arrives in chunks of any size."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, chunk: bytes | bytearray) -> None:
        self._buf += chunk

    def next(self) -> bytes | None:
        """The next whole frame's body, or None until more bytes arrive.

        Raises:
            CodecError: the next frame announces more than ``max_size`` bytes.
        """
        if len(self._buf) < HEADER:
            return None
        size = frame_size(bytes(self._buf[:HEADER]), self.max_size)
        if len(self._buf) < HEADER + size:
            return None
        body = bytes(self._buf[HEADER : HEADER + size])
        del self._buf[: HEADER + size]
        return body
