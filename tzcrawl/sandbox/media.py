"""Real media bytes for the sandbox's file host: PNG, JPEG, MP3 and OGG, made from a name and a size.

Each file is a small valid image or audio stream (Pillow draws the images) padded to the size wanted
with a chunk every reader skips (a private PNG chunk, JPEG comments, MP3 frames, an Opus comment), so
a browser shows it and a benchmark can ask for 50-500 KB files without storing any.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


def make(name: str, size: int, seed: int = 0) -> bytes:
    """The file called ``name`` (its extension picks the format), about ``size`` bytes, always the same."""
    ext = name[name.rfind("."):].lower() if "." in name else ""
    rng = random.Random(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest())
    maker = {".png": _png, ".jpg": _jpeg, ".mp3": _mp3, ".ogg": _ogg}.get(ext)
    if maker is None:
        raise KeyError(f"no media format for {name!r}")
    return maker(rng, max(0, size))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _image(rng: random.Random, fmt: str) -> bytes:
    from PIL import Image, ImageDraw  # the sandbox only: the crawler never decodes media

    image = Image.new("RGB", (32, 24), _colour(rng))
    ImageDraw.Draw(image).ellipse((6, 4, 26, 20), fill=_colour(rng))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _png(rng: random.Random, size: int) -> bytes:
    data = _image(rng, "PNG")
    pad = size - len(data) - 12  # a chunk is length + type + data + CRC
    if pad <= 0:
        return data
    body = rng.randbytes(pad)
    chunk = struct.pack(">I", pad) + b"tzPd" + body + struct.pack(">I", zlib.crc32(b"tzPd" + body))
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def _jpeg(rng: random.Random, size: int) -> bytes:
    data = _image(rng, "JPEG")
    comments = []
    left = size - len(data)
    while left > 4:
        part = min(left - 4, 65533)
        comments.append(b"\xff\xfe" + struct.pack(">H", part + 2) + rng.randbytes(part))
        left -= part + 4
    return data[:2] + b"".join(comments) + data[2:]  # after SOI


MP3_FRAME = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417-byte frames


def _mp3(rng: random.Random, size: int) -> bytes:
    frames = max(1, -(-size // 417))
    return b"".join(MP3_FRAME + rng.randbytes(413) for _ in range(frames))[: max(size, 417)]


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_OGG_CRC = _crc_table()


def _ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected: not zlib's)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc


def _ogg_page(serial: int, sequence: int, packet: bytes, flags: int) -> bytes:
    lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, 0, serial, sequence, 0, len(lacing)) + bytes(lacing)
    page = header + packet
    return page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:]


def _ogg(rng: random.Random, size: int) -> bytes:
    """An Ogg Opus stream's two header pages (what players read first); the comment pads it (≤ 64 KB)."""
    serial = rng.getrandbits(32)
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    pad = max(0, min(size - 100, 64000))
    comment = b"PAD=" + rng.randbytes(pad // 2).hex().encode()[:pad]
    tags = b"OpusTags" + struct.pack("<I", 7) + b"tzcrawl" + struct.pack("<I", 1) + struct.pack("<I", len(comment)) + comment
    return _ogg_page(serial, 0, head, 0x02) + _ogg_page(serial, 1, tags, 0x00)
