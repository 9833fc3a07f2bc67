"""An image's width and height read from its header, before anything is decoded.

Why: a 20000×20000 PNG is a 1 MB file that decodes to 1.2 GB, and a board holding an LLM has no
such memory to spare. ``media`` reads the size here first and refuses absurd images before the
decoder allocates them; it also picks the reduced JPEG decode from it. The formats are the ones
``media.IMAGE_SUFFIXES`` admits, recognised by their content (a PNG named ``.jpg`` is a PNG): PNG
(IHDR), JPEG (the SOF segment), BMP (the DIB header), WebP (VP8, VP8L, VP8X) and TIFF (the first
IFD, either byte order). ``size`` returns None for anything else, and the caller refuses it.
"""
from __future__ import annotations

import struct
from typing import BinaryIO

PNG = "png"
JPEG = "jpeg"
BMP = "bmp"
WEBP = "webp"
TIFF = "tiff"

# JPEG start-of-frame markers: C0–CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def size(path) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of the image at ``path``, or None when the content is
    not one of the formats above or its header is cut short."""
    with open(path, "rb") as f:
        head = f.read(32)
        try:
            for reader in (_png, _jpeg, _bmp, _webp, _tiff):
                found = reader(head, f)
                if found:
                    return found
        except (struct.error, ValueError):
            return None
    return None


def _png(head: bytes, f: BinaryIO):
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return PNG, width, height
    return None


def _jpeg(head: bytes, f: BinaryIO):
    if head[:2] != b"\xff\xd8":
        return None
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue                            # stray bytes between segments
        marker = f.read(1)
        while marker == b"\xff":                # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code == 0xD9 or code == 0xDA:        # end of image, or scan data before any frame header
            return None
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            continue                            # markers without a length
        (length,) = struct.unpack(">H", f.read(2))
        if code in _SOF:
            _, height, width = struct.unpack(">BHH", f.read(5))
            return JPEG, width, height
        f.seek(length - 2, 1)


def _bmp(head: bytes, f: BinaryIO):
    if head[:2] != b"BM":
        return None
    (header,) = struct.unpack("<I", head[14:18])
    if header == 12:                            # BITMAPCOREHEADER
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return BMP, abs(width), abs(height)         # negative height: stored top-down


def _webp(head: bytes, f: BinaryIO):
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":                        # lossy: the key frame's 14-bit sizes
        width, height = struct.unpack("<HH", head[26:30])
        return WEBP, width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":                        # lossless: 14 bits each, minus one, after the 0x2f signature
        (bits,) = struct.unpack("<I", head[21:25])
        return WEBP, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":                        # extended: the canvas, 24 bits each, minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return WEBP, width, height
    return None


def _tiff(head: bytes, f: BinaryIO):
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
    if order is None:
        return None
    (offset,) = struct.unpack(order + "I", head[4:8])
    f.seek(offset)
    (count,) = struct.unpack(order + "H", f.read(2))
    found = {}
    for _ in range(count):
        tag, kind, _, value = struct.unpack(order + "HHI4s", f.read(12))
        if tag in (256, 257):                   # ImageWidth, ImageLength: SHORT or LONG
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[:2 if kind == 3 else 4])[0]
    if 256 in found and 257 in found:
        return TIFF, found[256], found[257]
    return None
