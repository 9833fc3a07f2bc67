"""RKNN encoders through FakeRKNNLite: one instance per NPU core, return codes, fallback, shapes, release."""
from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import pytest

from doubles.fake_rknnlite import FakeRKNNLite, write_rknn
from rkvideo import models, preprocess, vision
from rkvideo.vision import rknn
from rkvideo.media import Frame

pytest.importorskip("onnxruntime", reason="needs the [cpu] extra: pip install -e '.[cpu]'")
pytest.importorskip("onnx", reason="needs the [cpu] extra: pip install -e '.[cpu]'")

# 112² in 28-pixel patches: 16 tokens, the Qwen2-VL arithmetic (14-pixel patches merged 2×2), so the side the
# token count implies agrees with model.input_size as it does for a real encoder.
SIZE, PATCH, WIDTH = 112, 28, 32
PROFILE = dataclasses.replace(models.get("qwen2-vl-2b"), input_size=SIZE, tokens_per_image=16, embed_width=WIDTH)
MB = 1 << 20


@pytest.fixture
def fake(monkeypatch):
    FakeRKNNLite.reset()
    monkeypatch.setattr(rknn, "_load_class", lambda: FakeRKNNLite)
    yield FakeRKNNLite
    FakeRKNNLite.reset()


def make_encoder(directory, outputs=1, baked=True, npu_bytes=64 * MB, name="enc"):
    """A real ONNX patch encoder (float NCHW in) and its stand-in .rknn with CLIP mean/std baked in."""
    from rkvideo import selftest
    onnx_path = selftest.build_encoder(directory / f"{name}.onnx", size=SIZE, patch=PATCH, width=WIDTH,
                                       outputs=outputs)
    mean, std = (models.CLIP_MEAN, models.CLIP_STD) if baked else (None, None)
    return write_rknn(directory / f"{name}.rknn", mean=mean, std=std, npu_bytes=npu_bytes), onnx_path


def reference(onnx_path, image, profile=PROFILE):
    """What the model gives on the host-normalised frame (the board's contract, computed the long way)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tensor = preprocess.for_profile(image, profile, "host")
    return session.run(None, {session.get_inputs()[0].name: tensor})


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), index=k, pts=k, seconds=float(k),
                  source="clip.mp4") for k in range(n)]


def test_one_instance_per_core_with_masks_1_2_4(fake, tmp_path):
    path, onnx_path = make_encoder(tmp_path)
    encoders = rknn.open_encoders(str(path), PROFILE, 3)
    try:
        assert [e.core for e in encoders] == [0, 1, 2]
        assert [i.core_mask for i in fake.instances] == [1, 2, 4]
        # RKNNLite cannot report the input side: the token count read at warm-up stands in for it.
        assert all(e.input_size is None and e.output_shapes == [[1, 16, WIDTH]] for e in encoders)
        assert all(e.path == str(path) and e.normalize == "encoder" for e in encoders)
        image = frames(1)[0].image
        tensor = preprocess.for_profile(image, PROFILE)
        assert tensor.dtype == np.uint8 and tensor.shape == (1, SIZE, SIZE, 3)
        got = encoders[1].run(tensor)
        want = reference(onnx_path, image)
        assert len(got) == 1 and got[0].dtype == np.float32
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    finally:
        for e in encoders:
            e.close()
    assert all(i.released and i.release_calls == 1 for i in fake.instances)


def test_pool_over_three_cores_encodes_in_order(fake, tmp_path):
    path, onnx_path = make_encoder(tmp_path)
    batch = frames(9)
    with vision.open_pool(str(path), PROFILE, workers=3, queue_size=2) as pool:
        assert pool.workers == 3 and pool.output_width == WIDTH
        encoded = pool.encode(iter(batch))
    assert encoded.embeddings.shape == (9, 16, WIDTH)
    for k in (0, 4, 8):
        want = reference(onnx_path, batch[k].image)[0].reshape(16, WIDTH)
        np.testing.assert_allclose(encoded.embeddings[k], want, rtol=1e-4, atol=1e-4)
    assert sum(i.calls for i in fake.instances) == 9 + 3          # frames + one warm-up each
    assert fake.violations == []
    assert all(i.released for i in fake.instances)


def test_deepstack_outputs_are_read_and_interleaved(fake, tmp_path):
    # Qwen3-VL merges 16-pixel patches 2×2 (32 pixels per token): 16 tokens at 112 come from a 128 side, so
    # this 28-pixel stand-in encoder is described with the Qwen2 arithmetic.
    profile = dataclasses.replace(models.get("qwen3-vl-2b"), input_size=SIZE, tokens_per_image=16,
                                  embed_width=WIDTH, normalize="encoder", cell=28)
    path, _ = make_encoder(tmp_path, outputs=4)
    # The Qwen3-VL profile bakes 0.5/0.5 while this .rknn bakes CLIP: the fake honours the file.
    with vision.open_pool(str(path), profile, workers=2) as pool:
        assert [len(e.output_shapes) for e in pool.encoders] == [4, 4]
        assert pool.output_width == 4 * WIDTH
        row = pool.encode(iter(frames(1))).embeddings[0]
    for k in range(4):   # output k is (k + 1) × output 0, token by token
        np.testing.assert_allclose(row[:, k * WIDTH:(k + 1) * WIDTH], (k + 1) * row[:, :WIDTH], rtol=1e-5)


def test_falls_back_to_fewer_workers_when_npu_memory_runs_out(fake, tmp_path, caplog):
    path, _ = make_encoder(tmp_path, npu_bytes=1500 * MB)
    with caplog.at_level(logging.WARNING, logger="rkvideo.vision.rknn"):
        encoders = rknn.open_encoders(str(path), PROFILE, 3)
    try:
        assert len(encoders) == 2 and [i.core_mask for i in fake.instances if i.session] == [1, 2]
        assert "init_runtime on NPU core 2 failed" in caplog.text and "continuing with 2" in caplog.text
        assert fake.instances[2].released and fake.instances[2].held == 0
    finally:
        for e in encoders:
            e.close()
    assert fake._allocated == 0


def test_no_core_at_all_is_an_error_and_releases_everything(fake, tmp_path):
    path, _ = make_encoder(tmp_path, npu_bytes=5 << 30)
    with pytest.raises(vision.VisionError, match=r"enc.rknn: RKNNLite.init_runtime on NPU core 0 failed "
                                                 r"\(return code -1.*rkvideo doctor"):
        rknn.open_encoders(str(path), PROFILE, 3)
    assert len(fake.instances) == 1 and fake.instances[0].released


def test_pool_is_sized_from_the_file_before_trying(fake, tmp_path, monkeypatch, caplog):
    path, _ = make_encoder(tmp_path)
    monkeypatch.setattr(rknn, "DOMAIN_BYTES", int(path.stat().st_size * rknn.OVERHEAD * 2.5))
    with caplog.at_level(logging.WARNING, logger="rkvideo.vision.rknn"):
        encoders = rknn.open_encoders(str(path), PROFILE, 3)
    for e in encoders:
        e.close()
    assert len(encoders) == 2 and len(fake.instances) == 2
    assert "do not fit the 4 GiB NPU memory domain; using 2 (set vision.workers = 2)" in caplog.text


def test_more_workers_than_cores_are_capped(fake, tmp_path, caplog):
    path, _ = make_encoder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rkvideo.vision.rknn"):
        encoders = rknn.open_encoders(str(path), PROFILE, 5)
    for e in encoders:
        e.close()
    assert len(encoders) == 3 and "has 3 cores" in caplog.text


def test_bad_files(fake, tmp_path):
    with pytest.raises(vision.VisionError, match="nope.rknn: vision model file not found"):
        rknn.open_encoders(str(tmp_path / "nope.rknn"), PROFILE, 1)
    (tmp_path / "junk.rknn").write_bytes(b"\x00not a model")
    with pytest.raises(vision.VisionError, match=r"junk.rknn: RKNNLite.load_rknn failed \(return code -1\)"):
        rknn.open_encoders(str(tmp_path / "junk.rknn"), PROFILE, 1)
    assert all(i.released for i in fake.instances)


@pytest.mark.parametrize("change,message", [
    ({"tokens_per_image": 25}, "16 tokens per image, profile qwen2-vl-2b says 25 for a 112×112 input .*"
                               "16 tokens is what model.input_size = 112 gives: set model.tokens_per_image = 16"),
    ({"tokens_per_image": 64, "input_size": 224}, "16 tokens per image, profile qwen2-vl-2b says 64 for a 224×224 "
                                                  "input .*16 tokens is what a 112×112 input gives: if the encoder "
                                                  "was converted for that size, set model.input_size = 112"),
    ({"embed_width": 64}, "32 floats per token per output, profile qwen2-vl-2b says 64"),
    ({"encoder_outputs": 4}, "1 outputs, profile qwen2-vl-2b says 4"),
    # Only the side is wrong: the runtime reads the buffer anyway (whether the real one refuses is unknown),
    # the model gives its own 16 tokens, and 16 tokens mean a 112² input.
    ({"input_size": 140}, r"the encoder gives 16 tokens per image, which for qwen2-vl means a 112×112 input, but "
                          r"model.input_size is 140 .*set model.input_size = 112"),
])
def test_shapes_are_checked_against_the_profile_before_any_frame(fake, tmp_path, change, message):
    path, _ = make_encoder(tmp_path)
    with pytest.raises(vision.VisionError, match=message):
        rknn.open_encoders(str(path), dataclasses.replace(PROFILE, **change), 3)
    assert len(fake.instances) == 3 and all(i.released for i in fake.instances)
    assert all(i.calls == 1 for i in fake.instances)   # the warm-up only
    if "input_size" in change:   # the double was handed a buffer of another size and read it anyway
        assert all(i.size_mismatches for i in fake.instances)


def test_a_runtime_that_refuses_the_wrong_size_fails_the_warm_up(fake, tmp_path):
    fake.wrong_size = "reject"
    path, _ = make_encoder(tmp_path)
    with pytest.raises(vision.VisionError, match=r"warm-up inference on a grey 140×140 uint8 NHWC frame failed on "
                                                 r"every NPU core.*\(model.input_size\)"):
        rknn.open_encoders(str(path), dataclasses.replace(PROFILE, input_size=140), 2)
    assert all(i.released for i in fake.instances)


def test_without_patch_arithmetic_the_token_count_names_both_keys(fake, tmp_path):
    """SmolVLM2: no source gives its patch arithmetic, so only the count is compared, naming both keys."""
    smol = dataclasses.replace(models.get("smolvlm2-500m"), input_size=SIZE, tokens_per_image=36,
                               embed_width=WIDTH, mean=models.CLIP_MEAN, std=models.CLIP_STD)
    path, _ = make_encoder(tmp_path)
    wanted = (r"gives 16 tokens per image, profile smolvlm2-500m says 36 for a 112×112 input .*check "
              r"model.input_size \(112\) against the size the encoder was converted for, then set "
              r"model.tokens_per_image = 16")
    with pytest.raises(vision.VisionError, match=wanted):
        rknn.open_encoders(str(path), smol, 1)


def test_inference_none_fails_the_request_with_the_frame_index(fake, tmp_path):
    path, _ = make_encoder(tmp_path)
    batch = [Frame(image=np.full((40, 40, 3), 10 * k, np.uint8), index=k, pts=k, seconds=k / 2,
                   source="clip.mp4") for k in range(6)]
    poison = preprocess.for_profile(batch[4].image, PROFILE)
    with vision.open_pool(str(path), PROFILE, workers=3) as pool:
        fake.fail_when = lambda instance, array: np.array_equal(array, poison)
        with pytest.raises(vision.VisionError, match=r"frame 4 \(clip.mp4 at 2.00s\): .*enc.rknn: "
                                                     r"RKNNLite.inference failed on NPU core \d \(it returned None"):
            pool.encode(iter(batch))
        assert not [t for t in threading.enumerate() if t.name.startswith(vision.THREAD_PREFIX)]
    assert all(i.released for i in fake.instances)


def test_host_normalised_rknn_gets_float_nchw(fake, tmp_path):
    profile = dataclasses.replace(PROFILE, normalize="host")
    path, onnx_path = make_encoder(tmp_path, baked=False)
    encoders = rknn.open_encoders(str(path), profile, 1)
    image = frames(1)[0].image
    got = encoders[0].run(preprocess.for_profile(image, profile))
    encoders[0].close()
    encoders[0].close()
    np.testing.assert_allclose(got[0], reference(onnx_path, image)[0], rtol=1e-5, atol=1e-5)
    assert fake.instances[0].release_calls == 1


def test_missing_toolkit_names_the_extra(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_rknnlite(name, *args, **kwargs):
        if name.startswith("rknnlite"):
            raise ImportError("No module named 'rknnlite'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rknnlite)
    with pytest.raises(vision.VisionError, match=r"install the \[rk\] extra on the board: pip install 'rkvideo\[rk\]'"):
        rknn.open_encoders(str(tmp_path / "x.rknn"), PROFILE, 1)


def test_the_double_catches_two_threads_on_one_instance(fake, tmp_path):
    """FakeRKNNLite itself: concurrent use of one instance is recorded."""
    path, _ = make_encoder(tmp_path)
    encoder = rknn.open_encoders(str(path), PROFILE, 1)[0]
    inside, release = threading.Event(), threading.Event()

    def hold(instance, array):
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return False

    fake.fail_when = hold
    tensor = preprocess.for_profile(frames(1)[0].image, PROFILE)
    first = threading.Thread(target=encoder.run, args=(tensor,))
    first.start()
    inside.wait(10)
    second = threading.Thread(target=encoder.run, args=(tensor,))
    second.start()
    while not fake.violations and second.is_alive():
        second.join(0.01)
    release.set()
    first.join()
    second.join()
    encoder.close()
    assert len(fake.violations) == 1


def test_the_double_accepts_what_the_real_class_accepts(fake, tmp_path):
    """Like rknn-toolkit-lite2 2.3.2/2.5.0: float32 0–255 for a model with mean/std built in, and NCHW
    transposed with a warning; the double is not stricter than the board."""
    path, _ = make_encoder(tmp_path)
    encoder = rknn.open_encoders(str(path), PROFILE, 1)[0]
    lite = fake.instances[0]
    try:
        nhwc = preprocess.for_profile(frames(1)[0].image, PROFILE)
        want = lite.inference(inputs=[nhwc], data_type="uint8", data_format="nhwc")[0]
        as_float = lite.inference(inputs=[nhwc.astype(np.float32)], data_type="float32", data_format="nhwc")[0]
        np.testing.assert_allclose(as_float, want, rtol=1e-6)
        assert lite.warnings == []
        nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(lite.inference(inputs=[nchw], data_format="nchw")[0], want, rtol=1e-6)
        assert lite.warnings == [f"inputs[0] is NCHW (1, 3, {SIZE}, {SIZE}): transposed to NHWC"]
        # What it does refuse: a dtype other than the one named, and NCHW declared as NHWC.
        assert lite.inference(inputs=[nhwc], data_type="float32") is None
        assert lite.inference(inputs=[nchw], data_format="nhwc") is None
    finally:
        encoder.close()


def test_host_normalisation_on_a_baked_encoder_is_silently_wrong(fake, tmp_path):
    """normalize = "host" for an .rknn with mean/std built in: the board takes the float NCHW input (with a
    warning in its log) and normalises it a second time. Nothing fails, so only model.normalize protects."""
    path, onnx_path = make_encoder(tmp_path)
    host = dataclasses.replace(PROFILE, normalize="host")
    encoder = rknn.open_encoders(str(path), host, 1)[0]
    try:
        image = frames(1)[0].image
        got = encoder.run(preprocess.for_profile(image, host))[0]
    finally:
        encoder.close()
    assert fake.instances[0].warnings and "transposed to NHWC" in fake.instances[0].warnings[0]
    assert not np.allclose(got, reference(onnx_path, image)[0], rtol=1e-2, atol=1e-2)


def test_python_without_a_toolkit_wheel_names_the_fix():
    assert rknn.wheels_for((3, 12, 3)) == ["2.3.2", "2.5.0"] and rknn.wheels_for((3, 9)) == ["2.3.2"]
    assert rknn.wheels_for((3, 13, 5)) == []
    assert rknn.toolkit_hint((3, 12, 3)) == rknn.EXTRA_HINT
    hint = rknn.toolkit_hint((3, 13, 5))
    assert hint.startswith("rknn-toolkit-lite2 has no wheel for Python 3.13.5 (2.3.2: cp37–cp312; 2.5.0: "
                           "cp310–cp312)")
    assert "uv venv --seed --python 3.12" in hint and "pip install 'rkvideo[rk]'" in hint
