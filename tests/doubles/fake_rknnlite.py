"""FakeRKNNLite: a TEST DOUBLE of ``rknnlite.api.RKNNLite`` (rknn-toolkit-lite2), for tests only.

It has the real class's method names, signatures, constants and return
conventions (docs/board.md, "Vision encoder (RKNNLite)"): ``load_rknn`` and
``init_runtime`` return 0 or −1 and never raise, ``inference`` returns a list
of arrays or None on any error, ``release`` returns None and is idempotent. Outputs are
real: a ``.rknn`` path runs its sibling ``.onnx`` through ONNX Runtime.

The stand-in ``.rknn`` file is JSON written by ``write_rknn``: the mean/std
baked in at conversion (0–255 scale, as ``rknn.config(mean_values=…)``
takes them) and the NPU memory one instance needs. Like the board, the fake
applies the baked mean/std itself before feeding NCHW float32 to the ONNX
graph; a model converted without mean/std takes normalised float32.

It accepts what the audit of the real class found it accepts, so a test
cannot pass only because the double is stricter than the board:

* a model with mean/std baked in takes RGB NHWC ``[1,H,W,3]`` as uint8 **or
  float32** (0–255 values; host-normalised floats are normalised a second
  time, silently, as on the board);
* a 4-D NCHW array with ``data_format="nchw"`` is transposed to NHWC, with a
  warning (recorded in ``instance.warnings``).

Not stated by any source, so decided here and switchable: a buffer whose
height/width differ from the model's (``wrong_size``: "accept" — the default,
the more dangerous case: the bytes are read as if they had the model's shape,
cut or zero-padded, and recorded in ``instance.size_mismatches`` — or
"reject": ``inference`` returns None). uint8 input to a model without baked
normalisation is refused.

Test hooks (class attributes, reset with ``FakeRKNNLite.reset()``):
``instances`` (every instance created), ``domain_bytes`` (the NPU IOMMU
domain 0 all instances share; an ``init_runtime`` that does not fit returns
−1), ``fail_when(instance, array) -> bool`` (make ``inference`` return
None), ``violations`` (an instance used by two threads at once),
``wrong_size`` (see above).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

GIB = 1 << 30


def write_rknn(path, *, mean=None, std=None, npu_bytes: int = 64 << 20) -> Path:
    """A stand-in .rknn next to its .onnx. ``mean``/``std`` in 0–1 units (None: no baked normalisation)."""
    data = {"fake_rknn": 1, "npu_bytes": int(npu_bytes)}
    if mean is not None:
        data["mean_values"] = [[float(m) * 255 for m in mean]]
        data["std_values"] = [[float(s) * 255 for s in std]]
    Path(path).write_text(json.dumps(data), encoding="utf-8")
    return Path(path)


class FakeRKNNLite:
    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    instances: list = []
    domain_bytes = 4 * GIB
    fail_when = None
    violations: list = []
    wrong_size = "accept"
    _allocated = 0
    _class_lock = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.instances = []
        cls.domain_bytes = 4 * GIB
        cls.fail_when = None
        cls.violations = []
        cls.wrong_size = "accept"
        cls._allocated = 0

    def __init__(self, verbose=False, verbose_file=None):
        self.verbose = verbose
        self.model = None
        self.path = None
        self.session = None
        self.core_mask = None
        self.held = 0
        self.calls = 0
        self.release_calls = 0
        self.released = False
        self.warnings: list = []
        self.size_mismatches: list = []
        self._busy = threading.Lock()
        FakeRKNNLite.instances.append(self)

    def load_rknn(self, path, key_path=None):
        try:
            model = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return -1
        if not isinstance(model, dict) or model.get("fake_rknn") != 1:
            return -1
        self.model, self.path = model, Path(path)
        return 0

    def init_runtime(self, target=None, device_id=None, async_mode=False, core_mask=NPU_CORE_AUTO):
        if self.model is None:
            return -1
        if core_mask not in (0, 1, 2, 4, 3, 7, 0xFFFF):
            return -1
        self._free()                      # a second call releases the previous runtime first
        need = int(self.model.get("npu_bytes", 0))
        with FakeRKNNLite._class_lock:
            if FakeRKNNLite._allocated + need > FakeRKNNLite.domain_bytes:
                return -1                 # "failed to malloc npu memory" on the board
            FakeRKNNLite._allocated += need
            self.held = need
        try:
            import onnxruntime
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(str(self.path.with_suffix(".onnx")), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception:
            self._free()
            return -1
        self.core_mask = core_mask
        return 0

    def _free(self) -> None:
        with FakeRKNNLite._class_lock:
            FakeRKNNLite._allocated -= self.held
            self.held = 0
        self.session = None

    def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None, get_frame_id=False):
        if not self._busy.acquire(blocking=False):
            FakeRKNNLite.violations.append((id(self), threading.current_thread().name))
            self._busy.acquire()
        try:
            return self._infer(inputs, data_type, data_format)
        finally:
            self._busy.release()

    def _infer(self, inputs, data_type, data_format):
        self.calls += 1
        if self.session is None or not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
            return None
        array = np.asarray(inputs[0])
        if data_type is not None and np.dtype(data_type) != array.dtype:
            return None                   # "… is not same as data_type"
        if FakeRKNNLite.fail_when is not None and FakeRKNNLite.fail_when(self, array):
            return None
        if array.ndim != 4 or (data_format or "nhwc") not in ("nhwc", "nchw"):
            return None
        feed = self.session.get_inputs()[0]
        side = tuple(feed.shape[2:4])     # the ONNX graph is NCHW float
        nhwc = self._as_nhwc(array, data_format or "nhwc")
        if nhwc is None:
            return None
        if "mean_values" in self.model:   # baked normalisation: uint8 or float32 0–255 in
            if nhwc.dtype not in (np.uint8, np.float32):
                return None
            nhwc = self._sized(nhwc, (1, *side, 3))
            if nhwc is None:
                return None
            mean = np.asarray(self.model["mean_values"][0], np.float32)
            std = np.asarray(self.model["std_values"][0], np.float32)
            tensor = (nhwc.astype(np.float32) - mean) / std
        else:
            if nhwc.dtype != np.float32:
                return None
            tensor = self._sized(nhwc, (1, *side, 3))
            if tensor is None:
                return None
        try:
            outputs = self.session.run(None, {feed.name: np.ascontiguousarray(tensor.transpose(0, 3, 1, 2),
                                                                               np.float32)})
        except Exception:
            return None
        return [np.asarray(o) for o in outputs]

    def _as_nhwc(self, array, data_format):
        """The input as NHWC; an NCHW array is transposed with a warning, as the real class does."""
        if data_format == "nchw":
            if array.shape[1] != 3:
                return None
            self.warnings.append(f"inputs[0] is NCHW {array.shape}: transposed to NHWC")
            return array.transpose(0, 2, 3, 1)
        return array if array.shape[3] == 3 else None

    def _sized(self, array, shape):
        """The buffer at the model's size; another size is refused or read as if it fitted."""
        if array.shape == shape:
            return array
        self.size_mismatches.append((array.shape, shape))
        if FakeRKNNLite.wrong_size == "reject":
            return None
        flat = np.zeros(int(np.prod(shape)), array.dtype)
        count = min(flat.size, array.size)
        flat[:count] = array.ravel()[:count]
        return flat.reshape(shape)

    def get_sdk_version(self):
        return "fake librknnrt 0.0 (test double)" if self.session is not None else None

    def release(self):
        self.release_calls += 1
        if not self.released:
            self._free()
            self.released = True
        return None
