"""Real, small, encoded media for tests.

Every clip is made with PyAV (the same libraries rkvideo decodes with), so
tests exercise real containers, real GOPs and real timestamps instead of
mocks. Each frame carries its own number and an orientation marker:

* a red block in the top-left corner and a green block in the top-right
  corner of the *upright* picture, so a test can tell whether rotation was
  applied (see ``is_upright``);
* the frame number as a row of black/white blocks along the bottom
  (see ``frame_number``), so a test can tell which frame it got back.

Public helpers:

* ``make_clip(path, ...)`` writes a clip and returns its path.
* ``clip(name, ...)`` is the cached form: clips are made once per test
  session in a temporary directory, keyed by their parameters.
* ``make_image(path, size, exif_orientation=None)`` writes a still image.
* ``truncate(src, dst, keep)``, ``corrupt(src, dst, at, size)`` and
  ``write_bytes(path, data)`` make broken files.
* ``frame_table(path)`` / ``frame_times(path)`` list every frame's timestamp
  (and keyframe flag) by decoding them all: the ground truth for samplers.
"""
from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = [
    "ENCODERS", "make_clip", "clip", "make_image", "image", "truncate", "corrupt", "write_bytes",
    "pattern", "frame_number", "is_upright", "frame_times", "frame_table", "has_encoder",
]

# Friendly codec name -> encoder used by PyAV.
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "mjpeg": "mjpeg", "mpeg4": "mpeg4"}

BITS = 10          # frame numbers up to 1023


def has_encoder(codec: str) -> bool:
    """True if this PyAV build can encode ``codec`` (a key of ENCODERS)."""
    try:
        av.codec.Codec(ENCODERS.get(codec, codec), "w")
        return True
    except Exception:
        return False


# --------------------------------------------------------------- pictures

def pattern(number: int, size: tuple[int, int]) -> np.ndarray:
    """Upright RGB picture (H×W×3) for frame ``number`` at ``size`` = (w, h)."""
    w, h = size
    img = np.full((h, w, 3), 128, np.uint8)
    bw, bh = w // 4, h // 4
    img[:bh, :bw] = (255, 0, 0)          # red: top-left
    img[:bh, w - bw:] = (0, 255, 0)      # green: top-right
    cell = w // BITS
    for bit in range(BITS):
        on = (number >> (BITS - 1 - bit)) & 1
        img[h - bh:, bit * cell:(bit + 1) * cell] = 255 if on else 0
    return img


def frame_number(img: np.ndarray) -> int:
    """Read back the number drawn by ``pattern`` from an upright RGB frame."""
    h, w = img.shape[:2]
    cell, row = w // BITS, h - h // 8
    bits = [img[row - 2:row + 2, b * cell + cell // 2 - 1:b * cell + cell // 2 + 2].mean() > 128
            for b in range(BITS)]
    return int("".join("1" if b else "0" for b in bits), 2)


def is_upright(img: np.ndarray) -> bool:
    """Red block top-left and green block top-right, as drawn by ``pattern``."""
    h, w = img.shape[:2]
    tl = img[h // 16, w // 16].astype(int)
    tr = img[h // 16, w - w // 16 - 1].astype(int)
    return tl[0] > 160 and tl[1] < 100 and tr[1] > 160 and tr[0] < 100


# ------------------------------------------------------------------ clips

def _frame_times(seconds: float, fps: float, vfr: bool) -> list[float]:
    """Presentation times (from 0) of every frame.

    VFR: the first half runs at ``fps``, the second half at fps/4, so frame
    index and time disagree (the trap for index-based seeking).
    """
    if not vfr:
        return [i / fps for i in range(max(1, round(seconds * fps)))]
    times, t = [], 0.0
    while t < seconds - 1e-9:
        times.append(round(t, 3))
        t += 1 / fps if t < seconds / 2 else 4 / fps
    return times


def _encoder_options(codec: str, gop: int | None, bframes: int | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if gop is not None and codec != "mjpeg":
        opts["g"] = str(gop)
        opts["keyint_min"] = str(gop)
    if codec == "h264":
        # Fixed GOP (no scene cuts) and one thread: byte-identical output.
        opts.update({"threads": "1", "sc_threshold": "0"})
        if bframes is not None:
            opts["bf"] = str(bframes)
    elif codec == "hevc":
        params = "log-level=none:pools=1:frame-threads=1:scenecut=0"
        if gop is not None:
            params += f":keyint={gop}:min-keyint={gop}"
        if bframes is not None:
            params += f":bframes={bframes}"
        opts["x265-params"] = params
    elif codec == "vp9":
        opts.update({"threads": "1", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
    return opts


def _time_base(out, fps: float) -> Fraction:
    # AVI counts frames, so its time base is the frame duration; the other
    # containers get milliseconds, fine enough for variable frame rates.
    return 1 / Fraction(fps).limit_denominator(1001) if out.format.name == "avi" else Fraction(1, 1000)


def _add_video(out, codec: str, fps: float, coded: tuple[int, int], gop, bframes, rotation: int):
    stream = out.add_stream(ENCODERS.get(codec, codec), rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = coded
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    stream.codec_context.time_base = stream.time_base = _time_base(out, fps)
    stream.options = _encoder_options(codec, gop, bframes)
    if codec == "mjpeg":
        stream.codec_context.qmin = stream.codec_context.qmax = 4
    if rotation:
        stream.set_display_rotation(rotation)
    return stream


def _add_audio(out):
    container = out.format.name
    codec = "pcm_s16le" if container == "avi" else ("libopus" if container in ("matroska", "webm") else "aac")
    stream = out.add_stream(codec, rate=48000 if codec == "libopus" else 16000)
    stream.layout = "mono"
    return stream


def _audio_frames(stream, seconds: float):
    """A 440 Hz tone, in frames the encoder accepts."""
    rate = stream.codec_context.sample_rate
    size = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    total = int(seconds * rate)
    for start in range(0, total, size):
        t = np.arange(start, start + size) / rate
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        if fmt.startswith("s16"):
            wave = (wave * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave[None, :], format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        yield frame


def _upright_to_stored(img: np.ndarray, rotation: int) -> np.ndarray:
    # The display matrix says "turn counter-clockwise by rotation to view",
    # so store the picture turned clockwise by the same amount.
    return np.ascontiguousarray(np.rot90(img, k=-(rotation // 90)))


def make_clip(path, seconds: float = 2.0, fps: float = 10, size: tuple[int, int] = (160, 120),
              codec: str = "h264", gop: int | None = None, rotation: int = 0, vfr: bool = False,
              start_pts: float = 0.0, audio: bool = False, audio_only: bool = False,
              bframes: int | None = None, faststart: bool = False, format: str | None = None,
              muxer_options: dict[str, str] | None = None) -> Path:
    """Encode a test clip and return its path.

    ``size`` is the upright (display) size (w, h); with ``rotation`` = 90 or
    270 the coded picture is h×w and the display matrix turns it upright.
    ``start_pts`` is the first frame's presentation time in seconds.
    ``gop`` is the keyframe interval in frames (encoder default if None).
    ``format`` forces a muxer; otherwise it follows the suffix.
    ``muxer_options`` go to the muxer, e.g. {"live": "1"} for a matroska file
    with no cues and no duration, like a recording that was never finalised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"fflags": "+bitexact"}
    if faststart:
        options["movflags"] = "+faststart"
    options.update(muxer_options or {})
    with av.open(str(path), "w", format=format, options=options) as out:
        video = None
        if not audio_only:
            coded = size if rotation % 180 == 0 else (size[1], size[0])
            video = _add_video(out, codec, fps, coded, gop, bframes, rotation)
        sound = _add_audio(out) if (audio or audio_only) else None
        if video is not None:
            for number, t in enumerate(_frame_times(seconds, fps, vfr)):
                img = _upright_to_stored(pattern(number, size), rotation)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                base = video.codec_context.time_base
                frame.pts, frame.time_base = round((t + start_pts) / base), base
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        if sound is not None:
            for frame in _audio_frames(sound, seconds):
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


# ----------------------------------------------------------------- images

# EXIF orientation -> how to store an upright picture so a viewer that
# applies the tag shows it upright again (inverse of the viewer's transform).
_STORE = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def _exif_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment holding only the EXIF orientation tag."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def make_image(path, size: tuple[int, int] = (160, 120), exif_orientation: int | None = None,
               number: int = 0) -> Path:
    """Write ``pattern(number, size)`` as an image; return its path.

    With ``exif_orientation`` (1–8, JPEG only) the pixels are stored turned
    or mirrored and the tag says how to show them upright.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    upright = pattern(number, size)
    stored = np.ascontiguousarray(_STORE[exif_orientation or 1](upright))
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(stored, cv2.COLOR_RGB2BGR))
    assert ok, f"OpenCV cannot encode {path.suffix}"
    data = data.tobytes()
    if exif_orientation is not None:
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            raise ValueError("exif_orientation is only supported for JPEG")
        data = data[:2] + _exif_segment(exif_orientation) + data[2:]
    path.write_bytes(data)
    return path


# ------------------------------------------------------------ bad inputs

def truncate(src, dst, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src`` to ``dst``."""
    data = Path(src).read_bytes()
    return write_bytes(dst, data[: int(len(data) * keep)])


def corrupt(src, dst, at: float = 0.7, size: int = 64, seed: int = 0) -> Path:
    """Copy ``src`` to ``dst`` with ``size`` random bytes written at fraction ``at``."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    data[start:start + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return write_bytes(dst, bytes(data))


def write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -------------------------------------------------------------- analysis

def frame_times(path) -> list[float]:
    """Presentation time in seconds of every frame, by decoding them all."""
    return [t for _, t, _ in frame_table(path)]


def frame_table(path) -> list[tuple[int, float, bool]]:
    """(pts, seconds, keyframe?) of every frame, by decoding them all.
    Seconds are stream time, not shifted to the first frame."""
    with av.open(str(path)) as container:
        return [(f.pts, float(f.time), f.key_frame) for f in container.decode(video=0)]


# ------------------------------------------------------- session cache

_cache_dir: Path | None = None
_made: dict[tuple, Path] = {}


def _session_dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="rkvideo-media-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def clip(name: str, **kwargs) -> Path:
    """``make_clip`` once per test session: same name and arguments, same file.

    ``name`` is the file name (e.g. "gop10.mkv"); its suffix picks the
    container, and a name without one gets ".mp4".
    """
    if not Path(name).suffix:
        name += ".mp4"
    key = (name, repr(sorted(kwargs.items())))
    if key not in _made:
        folder = _session_dir() / f"c{len(_made)}"
        _made[key] = make_clip(folder / name, **kwargs)
    return _made[key]


def image(name: str, **kwargs) -> Path:
    """``make_image`` once per test session."""
    key = ("img", name, repr(sorted(kwargs.items())))
    if key not in _made:
        folder = _session_dir() / f"i{len(_made)}"
        _made[key] = make_image(folder / name, **kwargs)
    return _made[key]
