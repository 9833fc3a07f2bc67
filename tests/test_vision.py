"""The vision pool: order, overlap, shape checks, errors and threads; the ONNX encoder."""
from __future__ import annotations

import dataclasses
import sys
import threading
import time

import numpy as np
import pytest

from doubles.encoders import ScriptedEncoder, failing_on, signature
from rkvideo import models, preprocess, vision
from rkvideo.media import Frame, MediaError

PROFILE = dataclasses.replace(models.get("qwen2-vl-2b"), input_size=32, tokens_per_image=4, embed_width=3)


def frame(k: int, value: int | None = None, side: int = 32) -> Frame:
    """Frame k: a flat square picture of ``value`` (10·k + 5 by default), so its signature is that value."""
    value = 10 * k + 5 if value is None else value
    return Frame(image=np.full((side, side, 3), value, np.uint8), index=k, pts=k * 100, seconds=k * 0.5,
                 source="clip.mp4")


def frames(n: int):
    for k in range(n):
        yield frame(k)


def pool_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith(vision.THREAD_PREFIX)]


def make_pool(workers=2, queue_size=2, profile=PROFILE, **kw):
    encoders = [ScriptedEncoder(f"enc{i}.rknn", **kw) for i in range(workers)]
    return vision.VisionPool(encoders, profile, queue_size), encoders


# ------------------------------------------------------------ ordering

def test_results_come_back_in_frame_order_when_encoders_finish_out_of_order():
    # Frame 0 may only finish after frame 1 has: completion order is 1, 0, 2, 3.
    second_done = threading.Event()

    def hook(encoder, tensor):
        if signature(tensor) == 5:
            assert second_done.wait(5), "frame 1 was never encoded while frame 0 was in flight"

    finished = []
    pool, _ = make_pool(workers=2, hook=hook)

    def on_frame(f):
        finished.append(f.index)
        if f.index == 1:
            second_done.set()

    encoded = pool.encode(frames(4), on_frame)
    assert finished[0] == 1 and sorted(finished) == [0, 1, 2, 3]
    assert [f.index for f in encoded.frames] == [0, 1, 2, 3]
    assert encoded.embeddings.shape == (4, 4, 3)
    assert encoded.embeddings.dtype == np.float32 and encoded.embeddings.flags.c_contiguous
    for k in range(4):
        assert np.all(encoded.embeddings[k] == 10 * k + 5)


def test_each_worker_gets_its_own_encoder_and_both_run_at_once():
    # Two frames must be inside run() at the same time or the barrier breaks.
    barrier = threading.Barrier(2, timeout=5)
    pool, encoders = make_pool(workers=2, hook=lambda e, t: barrier.wait())
    encoded = pool.encode(frames(6))
    assert len(encoded.frames) == 6
    assert all(e.calls > 0 for e in encoders) and sum(e.calls for e in encoders) == 6


def test_decoding_the_next_frame_overlaps_encoding_the_current_one():
    decoded_next = threading.Event()

    def source():
        yield frame(0)
        decoded_next.set()  # runs when the pool asks for frame 1
        yield frame(1)

    def hook(encoder, tensor):
        if signature(tensor) == 5:
            assert decoded_next.wait(5), "frame 1 was not decoded while frame 0 was being encoded"

    pool, _ = make_pool(workers=1, hook=hook)
    assert len(pool.encode(source()).frames) == 2


def test_the_queue_bounds_how_far_decoding_runs_ahead():
    queue_size = 2
    decoded = []
    full = threading.Event()
    ahead = []

    def source():
        for k in range(20):
            decoded.append(k)
            if k == queue_size + 1:
                full.set()  # frame 0 in the encoder, frames 1…queue_size queued, this one is being put
            yield frame(k)

    def hook(encoder, tensor):
        if signature(tensor) == 5:  # hold frame 0 until decoding has filled the queue
            assert full.wait(5)
            ahead.append(len(decoded))

    pool, _ = make_pool(workers=1, queue_size=queue_size, hook=hook)
    assert len(pool.encode(source()).frames) == 20
    # While the only encoder held frame 0, no more than 1 + queue_size + 1 frames were decoded.
    assert ahead == [queue_size + 2]


def test_wall_time_follows_the_slower_stage_not_the_sum():
    decode, encode, n, workers = 0.02, 0.09, 12, 3

    def slow_source():
        for k in range(n):
            time.sleep(decode)  # a decoder of known speed
            yield frame(k)

    pool, _ = make_pool(workers=workers, queue_size=4, latency=encode)
    encoded = pool.encode(slow_source())
    wall = encoded.timings["vision"]
    serial = n * (decode + encode)
    ideal = max(n * decode, n * encode / workers)
    assert wall >= n * encode / workers * 0.95
    # Generous: the ideal is 0.36 s, one worker would need 1.08 s, doing both in turn 1.32 s.
    assert wall < 0.7 * serial, f"vision took {wall:.2f}s, ideal {ideal:.2f}s, serial {serial:.2f}s"
    assert encoded.timings["decode"] >= n * decode * 0.95
    assert encoded.timings["encode"] >= n * encode * 0.95


# ------------------------------------------------------------ outputs

def test_deepstack_outputs_are_interleaved_per_token():
    profile = dataclasses.replace(PROFILE, encoder_outputs=4)
    pool, _ = make_pool(workers=2, profile=profile, outputs=4)
    assert pool.output_width == 12
    encoded = pool.encode(frames(3))
    assert encoded.embeddings.shape == (3, 4, 12)
    for k in range(3):
        base = 10 * k + 5
        row = np.concatenate([np.full(3, base * (j + 1)) for j in range(4)])  # [o0, o1, o2, o3]
        assert np.array_equal(encoded.embeddings[k], np.tile(row, (4, 1)))


def test_two_dimensional_outputs_are_read_like_the_older_zoo_encoders():
    pool, _ = make_pool(shape=[4, 3])
    assert (pool.tokens, pool.width) == (4, 3)
    assert pool.encode(frames(2)).embeddings.shape == (2, 4, 3)


def test_preprocessing_follows_the_encoders_normalisation():
    host = dataclasses.replace(PROFILE, normalize="encoder")
    seen = []
    pool, _ = make_pool(workers=1, profile=host, normalize="host", hook=lambda e, t: seen.append(t))
    image = frame(0, side=48).image
    pool.encode([Frame(image=image, index=0, pts=None, seconds=0.0, source="a.png")])
    assert seen[0].dtype == np.float32 and seen[0].shape == (1, 3, 32, 32)
    assert np.array_equal(seen[0], preprocess.for_profile(image, host, "host"))


def test_no_frames_give_an_empty_result():
    pool, _ = make_pool()
    encoded = pool.encode(iter(()))
    assert encoded.frames == [] and encoded.embeddings.shape == (0, 4, 3)


# ------------------------------------------------------------ checks before encoding

@pytest.mark.parametrize("kw, key", [
    ({"tokens": 5}, "model.tokens_per_image = 5"),
    ({"width": 7}, "model.embed_width = 7"),
    ({"outputs": 4}, "model.encoder_outputs = 4"),
    ({"input_size": 64}, "model.input_size = 64"),
])
def test_a_shape_mismatch_names_the_file_and_the_key_before_any_frame(kw, key):
    encoder = ScriptedEncoder("zoo/qwen2_vl_vision.rknn", **kw)
    with pytest.raises(vision.VisionError) as err:
        vision.VisionPool([encoder], PROFILE)
    assert "zoo/qwen2_vl_vision.rknn" in str(err.value) and key in str(err.value)
    assert encoder.calls == 0


def test_unreadable_output_shape_is_refused():
    with pytest.raises(vision.VisionError, match="cannot read tokens"):
        vision.VisionPool([ScriptedEncoder(shape=[1, 1])], PROFILE)


# ------------------------------------------------------------ errors and threads

def test_a_failing_frame_fails_the_request_with_its_index_and_leaves_no_thread():
    pool, encoders = make_pool(workers=2, hook=failing_on(35))  # frame 3
    with pytest.raises(vision.VisionError) as err:
        pool.encode(frames(8))
    message = str(err.value)
    assert "frame 3" in message and "clip.mp4" in message and "NPU returned -1" in message
    assert pool_threads() == []
    # The pool is still usable after a failed request.
    encoders[0].hook = encoders[1].hook = None
    assert len(pool.encode(frames(2)).frames) == 2
    assert pool_threads() == []


def test_a_wrong_output_size_on_one_frame_names_that_frame():
    def hook(encoder, tensor):
        if signature(tensor) == 15:
            encoder.shape = [1, 5, 3]

    pool, _ = make_pool(workers=1, hook=hook)
    with pytest.raises(vision.VisionError, match=r"frame 1 .*expected 4×3"):
        pool.encode(frames(3))
    assert pool_threads() == []


def test_a_decode_error_keeps_its_type_and_stops_the_workers():
    def source():
        yield frame(0)
        raise MediaError("clip.mp4: cannot decode frame at 1.0s")

    pool, _ = make_pool(workers=2)
    with pytest.raises(MediaError, match="cannot decode"):
        pool.encode(source())
    assert pool_threads() == []


def test_an_error_in_the_progress_callback_stops_the_pool():
    pool, _ = make_pool(workers=2)

    def on_frame(f):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pool.encode(frames(10), on_frame)
    assert pool_threads() == []


def test_close_releases_every_encoder_once_and_the_pool_refuses_work():
    pool, encoders = make_pool(workers=3)
    pool.close()
    pool.close()
    assert [e.closed for e in encoders] == [1, 1, 1]
    with pytest.raises(vision.VisionError, match="closed"):
        pool.encode(frames(1))


# ------------------------------------------------------------ open_pool

def test_open_pool_refuses_an_unknown_suffix():
    with pytest.raises(vision.VisionError, match=r"model\.vision must be a \.rknn .* or an \.onnx"):
        vision.open_pool("encoder.tflite", PROFILE, 1)


def test_open_pool_hands_rknn_files_to_the_rknn_runtime(monkeypatch):
    from rkvideo.vision import rknn
    calls = []

    def open_encoders(path, profile, workers):
        calls.append((path, workers))
        return [ScriptedEncoder(path) for _ in range(workers)]

    monkeypatch.setattr(rknn, "open_encoders", open_encoders)
    pool = vision.open_pool("/models/vision.rknn", PROFILE, 3, 2)
    assert calls == [("/models/vision.rknn", 3)] and pool.workers == 3 and pool.queue_size == 2
    # The NPU runtime says so: the LLM then loads into the other NPU memory domain.
    assert vision.runtime_for("/models/vision.RKNN").npu and not vision.runtime_for("v.onnx").npu


def test_open_pool_closes_the_encoders_when_the_shapes_are_wrong(monkeypatch):
    from rkvideo.vision import rknn
    made = []

    def open_encoders(path, profile, workers):
        made.extend(ScriptedEncoder(path, tokens=9) for _ in range(workers))
        return list(made)

    monkeypatch.setattr(rknn, "open_encoders", open_encoders)
    with pytest.raises(vision.VisionError, match="tokens_per_image"):
        vision.open_pool("v.rknn", PROFILE, 2)
    assert [e.closed for e in made] == [1, 1]


# ------------------------------------------------------------ ONNX Runtime

CPU_EXTRA = "needs the [cpu] extra: pip install -e '.[cpu]'"


@pytest.fixture
def builders():
    pytest.importorskip("onnxruntime", reason=CPU_EXTRA)
    pytest.importorskip("onnx", reason=CPU_EXTRA)
    from rkvideo import selftest
    return selftest


TINY = dataclasses.replace(models.get("qwen2-vl-2b"), input_size=56, tokens_per_image=16, embed_width=64)


def reference_patch_embed(onnx_path, tensor):
    """The encoder graph recomputed in numpy: Conv stride = kernel = 14 is a per-patch matmul."""
    import onnx
    from onnx import numpy_helper
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    w, b = weights["patch_w"], weights["patch_b"]
    x = tensor[0]
    patches = x.reshape(3, 4, 14, 4, 14).transpose(1, 3, 0, 2, 4).reshape(16, -1)
    return patches @ w.reshape(64, -1).T + b


def test_onnx_pool_matches_a_numpy_reference(tmp_path, builders):
    path = builders.build_encoder(tmp_path / "enc.onnx", outputs=2)
    profile = dataclasses.replace(TINY, encoder_outputs=2)
    pool = vision.open_pool(str(path), profile, workers=2)
    try:
        first = pool.encoders[0]
        assert (first.normalize, first.input_size, first.output_shapes) == ("host", 56, [[1, 16, 64]] * 2)
        picture = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
        shots = [Frame(image=np.roll(picture, 7 * k, axis=1), index=k, pts=None, seconds=0.0, source=f"{k}.jpg")
                 for k in range(3)]
        encoded = pool.encode(shots)
    finally:
        pool.close()
    assert encoded.embeddings.shape == (3, 16, 128)
    for k, shot in enumerate(shots):
        want = reference_patch_embed(path, preprocess.for_profile(shot.image, profile, "host"))
        np.testing.assert_allclose(encoded.embeddings[k, :, :64], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(encoded.embeddings[k, :, 64:], 2 * want, rtol=1e-4, atol=1e-4)


def test_onnx_encoder_with_normalisation_inside_is_fed_uint8_like_the_board(tmp_path, builders):
    image = np.random.default_rng(1).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    results = {}
    for layout in ("nchw", "nhwc"):
        pool = vision.open_pool(str(builders.build_encoder(tmp_path / f"{layout}.onnx", layout=layout)), TINY, 1)
        try:
            results[layout] = (pool.encoders[0].normalize, pool.encode([Frame(image, 0, None, 0.0, "x.png")]))
        finally:
            pool.close()
    assert results["nchw"][0] == "host" and results["nhwc"][0] == "encoder"
    np.testing.assert_allclose(results["nhwc"][1].embeddings, results["nchw"][1].embeddings, rtol=1e-4, atol=1e-4)


def test_onnx_export_with_dynamic_shapes_and_grid_input_is_probed_once(tmp_path, builders):
    path = builders.build_encoder(tmp_path / "qwen_vision.onnx", rockchip_style=True)
    # The tiny export has no 2×2 merge: one token per 14-pixel patch. Its input side is dynamic, so
    # the model cannot report it (input_size None) and the token count stands in for it.
    tiny = dataclasses.replace(TINY, cell=14)
    pool = vision.open_pool(str(path), tiny, workers=2)
    try:
        assert [e.input_size for e in pool.encoders] == [None, None]
        assert pool.encoders[0].output_shapes == [[16, 64]]
        assert pool.encoders[1].output_shapes == [[16, 64]]
        # Rockchip's Qwen export: grid_thw = [[1, H/14, W/14]] = [[1, 2·√T, 2·√T]].
        assert pool.encoders[0].extra["grid_thw"].tolist() == [[1, 8, 8]]
        assert pool.encode(frames(2)).embeddings.shape == (2, 16, 64)
    finally:
        pool.close()
    # With the family's real arithmetic (2×2 merge: 28 pixels per token) 16 tokens mean a 112² input,
    # which contradicts model.input_size = 56: refused, naming the key and the side to set.
    with pytest.raises(vision.VisionError, match=r"16 tokens per image, which for qwen2-vl means a 112×112 input, "
                                                 r"but model.input_size is 56 .*set model.input_size = 112"):
        vision.open_pool(str(path), TINY, workers=1)


def test_onnx_threads_are_split_between_workers(tmp_path, monkeypatch, builders):
    from rkvideo.vision import onnxrt
    path = builders.build_encoder(tmp_path / "enc.onnx")
    seen = []
    real = onnxrt.OnnxEncoder

    def spy(path, profile, threads, known=None):
        seen.append(threads)
        return real(path, profile, threads, known)

    monkeypatch.setattr(onnxrt, "OnnxEncoder", spy)
    monkeypatch.setattr(onnxrt.os, "cpu_count", lambda: 8)
    for encoder in onnxrt.open_encoders(str(path), TINY, 3):
        encoder.close()
    assert seen == [2, 2, 2]


def test_onnx_load_errors_name_the_file(tmp_path, builders):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(vision.VisionError, match=r"broken\.onnx: cannot load the ONNX model"):
        vision.open_pool(str(bad), TINY, 1)


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(vision.VisionError) as err:
        vision.open_pool(str(tmp_path / "enc.onnx"), TINY, 1)
    assert "pip install 'rkvideo[cpu]'" in str(err.value) and "\n" not in str(err.value)
