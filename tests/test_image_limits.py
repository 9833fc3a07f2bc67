"""Photos are sized from their header and refused when absurd; large JPEGs decode at reduced size
(issue 9, item 11). Memory is measured as peak RSS of real processes, as a ratio to a baseline
measured in the same test."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import footage
from rkvideo import imagesize, media
from rkvideo.media import MediaError


def big_png(path, width: int, height: int):
    """A real grey PNG of ``width``×``height`` written row by row: a small file that decodes huge."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = bytes(1 + width)                      # filter byte 0, then black pixels
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", idat))
        f.write(chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------ headers

@pytest.mark.parametrize("suffix, kind", [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".webp", "webp"),
                                          (".tiff", "tiff")])
def test_the_header_gives_the_size_of_every_admitted_format(tmp_path, suffix, kind):
    image = np.random.default_rng(0).integers(0, 255, (45, 123, 3), dtype=np.uint8)
    ok, data = cv2.imencode(suffix, image)
    assert ok
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data.tobytes())
    assert imagesize.size(path) == (kind, 123, 45)


def test_the_header_is_read_by_content_and_other_content_is_refused(tmp_path):
    png_named_jpg = tmp_path / "really-a-png.jpg"
    png_named_jpg.write_bytes(cv2.imencode(".png", np.zeros((7, 9, 3), np.uint8))[1].tobytes())
    assert imagesize.size(png_named_jpg) == ("png", 9, 7)
    lossless = tmp_path / "lossless.webp"
    lossless.write_bytes(cv2.imencode(".webp", np.zeros((31, 70, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1])
    assert imagesize.size(lossless) == ("webp", 70, 31)
    exif = footage.image("rotated.jpg", size=(160, 120), exif_orientation=6)   # APP1 before the frame header
    assert imagesize.size(exif) == ("jpeg", 120, 160)                          # as stored: turned
    for junk in (b"", b"GIF89a\x01\x00\x01\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"not an image at all"):
        (tmp_path / "junk.png").write_bytes(junk)
        assert imagesize.size(tmp_path / "junk.png") is None


# ------------------------------------------------------------------ the limit

def test_an_absurd_image_is_refused_before_decoding_with_one_line(tmp_path, capsys, monkeypatch):
    from rkvideo import cli
    huge = big_png(tmp_path / "huge.png", 20000, 20000)
    assert huge.stat().st_size < 2_000_000
    with pytest.raises(MediaError) as err:
        list(media.load_images([str(huge)]))
    assert str(err.value) == (f"{huge}: the image is 20000×20000 (400 megapixels), more than "
                              f"describe.max_image_megapixels = 50 (scale it down first, or raise "
                              f"describe.max_image_megapixels)")
    config = tmp_path / "config.toml"
    config.write_text("[describe]\nmax_image_megapixels = 3\n")
    small = footage.image("two-mp.png", size=(2000, 1000))
    assert cli.main(["describe", str(huge), "--dry-run", "--config", str(config)]) == 2
    assert cli.main(["describe", str(small), "--dry-run", "--config", str(config)]) == 0
    config.write_text("[describe]\nmax_image_megapixels = 1.5\n")
    assert cli.main(["describe", str(small), "--dry-run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"rkvideo: error: {small}: the image is 2000×1000 (2 megapixels), more than "
                       f"describe.max_image_megapixels = 1.5 (scale it down first, or raise "
                       f"describe.max_image_megapixels)")


def test_a_large_jpeg_is_decoded_at_reduced_size_and_stays_upright(tmp_path):
    photo = footage.make_image(tmp_path / "big.jpg", size=(3600, 2400), exif_orientation=6, number=613)
    [frame] = media.load_images([str(photo)], side=448)
    # 1/8 of 3600×2400 leaves 450 ≥ 448 on the long side: enough for the encoder.
    assert frame.image.shape == (300, 450, 3)
    assert footage.is_upright(frame.image) and footage.frame_number(frame.image) == 613
    [full] = media.load_images([str(photo)])
    assert full.image.shape == (2400, 3600, 3)
    small = footage.make_image(tmp_path / "small.jpg", size=(640, 480))
    [kept] = media.load_images([str(small)], side=448)
    assert kept.image.shape[:2] == (480, 640)                 # 320 < 448: no reduction
    # A JPEG counts at the size it is decoded at: 2400×3600 as stored, at 1/8 0.135 megapixels.
    [frame] = media.load_images([str(photo)], side=448, max_pixels=200_000)
    with pytest.raises(MediaError, match=r"2400×3600 \(9 megapixels even at 1/8 size\)"):
        list(media.load_images([str(photo)], side=448, max_pixels=100_000))


PEAK = textwrap.dedent("""
    import json, resource, sys
    from rkvideo import media
    try:
        frames = list(media.load_images([sys.argv[1]], side=448))
        shape = list(frames[0].image.shape)
    except media.MediaError as exc:
        shape = str(exc)
    print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "result": shape}))
""")


def peak(path) -> dict:
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_peak_memory_stays_near_a_small_image_baseline(tmp_path):
    """A 20000×20000 PNG (refused) and a 6000×6000 JPEG (decoded at 1/8) cost about what a 2000×2000
    PNG costs; decoding either at full size would cost 2–10 times as much."""
    baseline = footage.make_image(tmp_path / "base.png", size=(2000, 2000))
    huge = big_png(tmp_path / "huge.png", 20000, 20000)
    grey = np.full((6000, 6000), 90, np.uint8)
    big_jpeg = tmp_path / "big.jpg"
    big_jpeg.write_bytes(cv2.imencode(".jpg", grey)[1].tobytes())
    base, refused, reduced = peak(baseline), peak(huge), peak(big_jpeg)
    assert base["result"] == [2000, 2000, 3]
    assert "20000×20000" in refused["result"]
    assert reduced["result"] == [750, 750, 3]
    assert refused["peak_kib"] / base["peak_kib"] < 1.2, (refused, base)
    assert reduced["peak_kib"] / base["peak_kib"] < 1.2, (reduced, base)
