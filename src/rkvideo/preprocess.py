"""Frames to encoder input, the way the stock RK3588 encoders were converted.

Rockchip's demos pad each frame to a centred square with grey (127.5), resize
it bilinearly to the encoder's input and feed RGB ``uint8`` NHWC; the mean/std
normalisation is baked into the ``.rknn``. An encoder without baked
normalisation (an ONNX export, or an ``.rknn`` built without mean/std) needs
float32 NCHW normalised on the host instead. Getting this wrong — BGR input,
normalising twice or not at all — does not fail, it silently degrades the
descriptions, so the choice is explicit (``normalize``) rather than guessed.

The 127.5 fill is rounded to 128 on uint8, as OpenCV does when it converts the
demo's ``Scalar(127.5)`` for a uint8 image.
"""
from __future__ import annotations

import cv2
import numpy as np


def letterbox(image: np.ndarray, fill: float = 127.5) -> np.ndarray:
    """Centre ``image`` (H×W×3) on a square of side max(H, W) filled with ``fill``."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    value = int(np.clip(np.rint(fill), 0, 255))
    square = np.full((side, side, image.shape[2]), value, dtype=image.dtype)
    square[top:top + h, left:left + w] = image
    return square


def resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def to_input(image: np.ndarray, size: int, *, fill: float = 127.5, normalize: str = "encoder",
             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """One RGB frame to an encoder tensor.

    ``normalize="encoder"``: uint8 ``[1, size, size, 3]`` (mean/std baked in).
    ``normalize="host"``: float32 ``[1, 3, size, size]``, ``(x/255 − mean)/std``.
    """
    square = resize(letterbox(np.ascontiguousarray(image, dtype=np.uint8), fill), size)
    if normalize == "encoder":
        return np.ascontiguousarray(square[None])
    if normalize != "host":
        raise ValueError(f"normalize must be 'encoder' or 'host', got {normalize!r}")
    scale = np.float32(1 / 255)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    planes = (square.astype(np.float32) * scale - mean) / std
    return np.ascontiguousarray(planes.transpose(2, 0, 1)[None])


def for_profile(image: np.ndarray, profile, normalize: str | None = None) -> np.ndarray:
    """``to_input`` with a profile's size, fill, mean and std."""
    return to_input(image, profile.input_size, fill=profile.fill, normalize=normalize or profile.normalize,
                    mean=profile.mean, std=profile.std)
