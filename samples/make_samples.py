"""Regenerate the sample media in this folder, byte for byte.

Usage:  python samples/make_samples.py [--out DIR]

Each file is small, synthetic and describable (a ball, a traffic light, a
counter, a sliding square, a house, a bar chart), so rkvideo can be tried
end to end without any recordings of one's own. The set covers the
containers and quirks the frame sampler handles:

    ball.mp4        H.264 + AAC audio, 320×240, 4 s, 15 fps, keyframe every 2 s
    phone.mov       H.264, stored 320×240 with a 90° display matrix (shows 240×320)
    counter.mkv     VP9, 320×240, 3 s, 10 fps
    webcam.avi      MJPEG, 320×240, 2 s, 10 fps
    house.jpg       JPEG stored sideways with EXIF orientation 6 (shows upright)
    chart.png       PNG, 320×240

Output is deterministic: single-threaded encoders, fixed GOPs, and bitexact
muxing (no library version strings or random IDs in the files).
"""
from __future__ import annotations

import argparse
import struct
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
W, H = 320, 240

SKY, GRASS, WHITE, BLACK = (135, 190, 235), (70, 150, 60), (255, 255, 255), (0, 0, 0)


# ------------------------------------------------------------------ drawing (RGB)

def ball_scene(t: float) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[: H * 2 // 3] = SKY
    img[H * 2 // 3:] = GRASS
    x = int(30 + (W - 60) * (t / 4.0))
    y = int(H * 2 // 3 - 20 - 90 * abs(np.sin(np.pi * t * 1.5)))
    cv2.circle(img, (x, y), 18, (220, 30, 30), -1, cv2.LINE_AA)
    return img


def traffic_light(t: float) -> np.ndarray:
    """Upright (portrait) picture: a traffic light turning red, amber, green."""
    h, w = W, H   # portrait 240×320
    img = np.full((h, w, 3), (200, 200, 205), np.uint8)
    cv2.rectangle(img, (80, 30), (160, 270), (40, 40, 40), -1)
    cv2.rectangle(img, (110, 270), (130, h), (60, 60, 60), -1)
    lit = min(2, int(t))
    for i, colour in enumerate([(230, 30, 30), (240, 170, 20), (40, 200, 60)]):
        shade = colour if i == lit else tuple(c // 4 for c in colour)
        cv2.circle(img, (120, 75 + 75 * i), 28, shade, -1, cv2.LINE_AA)
    return img


def counter(t: float) -> np.ndarray:
    img = np.full((H, W, 3), (250, 245, 230), np.uint8)
    cv2.putText(img, str(int(t) + 1), (120, 170), cv2.FONT_HERSHEY_SIMPLEX, 5, (20, 60, 160), 12, cv2.LINE_AA)
    cv2.rectangle(img, (0, H - 12), (int(W * (t % 1.0)), H), (20, 60, 160), -1)
    return img


def sliding_square(t: float) -> np.ndarray:
    img = np.full((H, W, 3), (30, 30, 40), np.uint8)
    x = int(20 + (W - 100) * (t / 2.0))
    cv2.rectangle(img, (x, 80), (x + 60, 140), WHITE, -1)
    return img


def house() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:160] = SKY
    img[160:] = GRASS
    cv2.circle(img, (270, 45), 25, (250, 220, 40), -1, cv2.LINE_AA)
    cv2.rectangle(img, (90, 100), (210, 190), (200, 80, 60), -1)
    cv2.fillPoly(img, [np.array([[80, 100], [150, 45], [220, 100]])], (120, 50, 40))
    cv2.rectangle(img, (135, 140), (165, 190), (90, 50, 30), -1)
    return img


def chart() -> np.ndarray:
    img = np.full((H, W, 3), WHITE, np.uint8)
    cv2.line(img, (30, 210), (300, 210), BLACK, 2)
    cv2.line(img, (30, 210), (30, 20), BLACK, 2)
    for i, (value, colour) in enumerate(zip([120, 170, 60, 140], [(230, 80, 60), (60, 130, 220), (80, 180, 90), (240, 180, 40)])):
        x = 50 + i * 62
        cv2.rectangle(img, (x, 210 - value), (x + 40, 209), colour, -1)
    return img


# ------------------------------------------------------------------ encoding

def write_video(path: Path, draw, seconds: float, fps: int, codec: str, gop: int | None = None,
                rotation: int = 0, audio: bool = False) -> None:
    rate = Fraction(fps)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = W, H
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        options = {"threads": "1"}
        if gop:
            options.update({"g": str(gop), "keyint_min": str(gop)})
        if codec == "libx264":
            options.update({"sc_threshold": "0", "preset": "medium", "crf": "26"})
        elif codec == "libvpx-vp9":
            options.update({"deadline": "good", "cpu-used": "4", "crf": "36", "b": "0"})
        else:
            video.codec_context.qmin = video.codec_context.qmax = 6
        video.options = options
        if rotation:
            video.set_display_rotation(rotation)
        sound = _add_tone(out) if audio else None
        for i in range(int(seconds * fps)):
            picture = draw(i / fps)
            if rotation:   # store it turned back; the display matrix turns it upright
                picture = np.ascontiguousarray(np.rot90(picture, -rotation // 90))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, seconds)


def _add_tone(out):
    stream = out.add_stream("aac", rate=16000)
    stream.layout = "mono"
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    return stream


def _write_tone(out, stream, seconds: float) -> None:
    rate, size = 16000, stream.codec_context.frame_size or 1024
    for start in range(0, int(seconds * rate), size):
        t = np.arange(start, start + size) / rate
        wave = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def exif_orientation_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment with just the EXIF orientation tag (big-endian TIFF)."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def write_jpeg_rotated(path: Path, upright: np.ndarray) -> None:
    """Store the picture turned 90° counter-clockwise with orientation 6
    ("turn clockwise to view"), as a phone held sideways does."""
    stored = np.ascontiguousarray(np.rot90(upright, 1))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    data = data.tobytes()
    path.write_bytes(data[:2] + exif_orientation_segment(6) + data[2:])


def write_png(path: Path, picture: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    path.write_bytes(data.tobytes())


def make_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_video(out / "ball.mp4", ball_scene, 4, 15, "libx264", gop=30, audio=True)
    write_video(out / "phone.mov", traffic_light, 3, 15, "libx264", gop=15, rotation=90)
    write_video(out / "counter.mkv", counter, 3, 10, "libvpx-vp9", gop=10)
    write_video(out / "webcam.avi", sliding_square, 2, 10, "mjpeg")
    write_jpeg_rotated(out / "house.jpg", house())
    write_png(out / "chart.png", chart())
    return sorted(p for p in out.iterdir() if p.suffix != ".py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate rkvideo's sample media.")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: this one)")
    args = parser.parse_args(argv)
    for path in make_all(args.out):
        print(f"{path.name:<14}{path.stat().st_size / 1024:8.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
