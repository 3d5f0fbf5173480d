"""Image files the decoding tests need that PIL will not write."""

import struct
import zlib


def png_header_only(path, width: int, height: int) -> None:
    """Write a PNG whose header declares ``width`` x ``height`` RGB pixels but holds no pixel data
    (how a decompression bomb announces itself: PIL reads the size before anything else)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                + chunk(b"IEND", b""))
