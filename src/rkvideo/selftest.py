"""``rkvideo selftest``: prove an install can run the whole pipeline, offline.

Why build models instead of shipping or downloading them: rkvideo may not
download weights, and real models are gigabytes. So the self-test writes a
tiny random-weight vision encoder (ONNX, a patch-embedding Conv built with
``onnx.helper``, no torch) and a tiny random-weight LLM (GGUF, architecture
``qwen2vl`` so the M-RoPE path runs, with a byte-level BPE tokenizer trained
on the spot), all from fixed seeds. They are shaped like a Qwen2-VL model:
the ``qwen2-vl-2b`` profile with small ``[model]`` overrides, which also
exercises the override path a user takes for an unverified model.

Then it writes a ``config.toml`` for them, generates a clip and two images,
and runs ``describe`` through the real pipeline (sampler, ONNX Runtime pool,
assembler, llama.cpp). The text is meaningless by design: the weights are
random. What is checked is plumbing: frame counts, token counts, timings, and
that a repeated request gives the same text (state is reset between clips).

The same builders make the test fixtures (tests/conftest.py).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config as config_mod, pipeline
from .errors import RuntimeFailure
from .llm import CPU_EXTRA_HINT
from .models import CLIP_MEAN, CLIP_STD

# The tiny model family. Patch 14 on a 56-pixel input gives a 4×4 grid: 16 tokens.
PROFILE = "qwen2-vl-2b"
INPUT_SIZE = 56
PATCH = 14
TOKENS = (INPUT_SIZE // PATCH) ** 2
WIDTH = 64
MAX_CONTEXT = 1024
SEED = 1234

# Every tag a profile can emit is a special token, as in the real vocabularies.
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>", "<image>", "<fake_token_around_image>", "<global-img>",
            "<end_of_utterance>", "<img>", "</img>", "<IMG_CONTEXT>"]

# Training text for the tokenizer: plain sentences of the kind the prompts use.
CORPUS = [
    "Describe what happens in this video.",
    "Describe these images.",
    "A person walks across the room and opens the door.",
    "The camera shows a parking lot with two cars and a bicycle.",
    "A dog runs through the garden while it is raining.",
    "Someone picks up a parcel from the front step.",
    "The light turns on in the kitchen at night.",
    "Two people talk near the window, then one of them leaves.",
    "A delivery van stops in front of the house for a minute.",
    "Frame 1 at 0.5s: the scene is empty.",
    "Frame 2 at 1.5s: a cat sits on the fence.",
    "Image 1: a red block in the corner. Image 2: a green block.",
    "You are a helpful assistant.",
    "The weather is cloudy and the street is wet.",
    "Children play football on the grass in the afternoon.",
    "A man in a blue jacket carries a ladder to the garage.",
    "The gate opens slowly and a white car drives in.",
    "Nothing moves for a long time; the picture stays the same.",
    "Birds land on the roof and fly away again.",
    "The door closes, the hallway is dark, and the recording ends.",
]


class SelftestError(RuntimeFailure):
    """A builder cannot run (missing extra)."""


def _need(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SelftestError(f"the self-test needs the {module!r} package; {CPU_EXTRA_HINT}") from None


# ------------------------------------------------------------------ encoder

def build_encoder(path, *, size: int = INPUT_SIZE, patch: int = PATCH, width: int = WIDTH, outputs: int = 1,
                  seed: int = SEED, layout: str = "nchw", rockchip_style: bool = False) -> Path:
    """A patch-embedding encoder: float32 [1,3,S,S] → ``outputs`` × [1, (S/patch)², width].

    Output k is the same patch embedding times (k + 1), so a test can tell
    the outputs apart after the DeepStack interleave. ``layout="nhwc"``
    makes a uint8 [1,S,S,3] input with the CLIP mean/std inside the graph,
    like an ``.rknn`` with baked normalisation. ``rockchip_style=True`` has
    the signature of Rockchip's Qwen exports: dynamic height and width, a
    ``grid_thw`` int64 [1,3] input, and [T, D] outputs of undeclared length.
    """
    onnx = _need("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    grid = size // patch
    weight = (rng.standard_normal((width, 3, patch, patch)) / np.sqrt(3 * patch * patch)).astype(np.float32)
    bias = (rng.standard_normal(width) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "patch_w"), numpy_helper.from_array(bias, "patch_b"),
             numpy_helper.from_array(np.array([1, width, grid * grid], np.int64), "flat")]
    nodes = []
    if layout == "nhwc":
        mean = np.array(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1) * 255
        std = np.array(CLIP_STD, np.float32).reshape(1, 3, 1, 1) * 255
        inits += [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std")]
        pixel = helper.make_tensor_value_info("pixel", TensorProto.UINT8, [1, size, size, 3])
        nodes += [helper.make_node("Cast", ["pixel"], ["pixel_f"], to=TensorProto.FLOAT),
                  helper.make_node("Transpose", ["pixel_f"], ["pixel_nchw"], perm=[0, 3, 1, 2]),
                  helper.make_node("Sub", ["pixel_nchw", "mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "std"], ["image"])]
    else:
        dims = [1, 3, "height", "width"] if rockchip_style else [1, 3, size, size]
        pixel = helper.make_tensor_value_info("pixel", TensorProto.FLOAT, dims)
        nodes.append(helper.make_node("Identity", ["pixel"], ["image"]))
    inputs = [pixel]
    if rockchip_style:
        # Read but unused here; Rockchip's graph reshapes its patches with it.
        inputs.append(helper.make_tensor_value_info("grid_thw", TensorProto.INT64, [1, 3]))
        inits[2] = numpy_helper.from_array(np.array([width, grid * grid], np.int64), "flat")
    nodes += [helper.make_node("Conv", ["image", "patch_w", "patch_b"], ["patches"],
                               kernel_shape=[patch, patch], strides=[patch, patch]),
              helper.make_node("Reshape", ["patches", "flat"], ["flat_patches"]),
              helper.make_node("Transpose", ["flat_patches"], ["tokens"],
                               perm=[1, 0] if rockchip_style else [0, 2, 1])]
    shape = ["tokens", width] if rockchip_style else [1, grid * grid, width]
    outs = []
    for k in range(outputs):
        name = f"embeds_{k}"
        inits.append(numpy_helper.from_array(np.array(k + 1, np.float32), f"scale_{k}"))
        nodes.append(helper.make_node("Mul", ["tokens", f"scale_{k}"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "rkvideo_selftest_encoder", inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="rkvideo-selftest")
    model.ir_version = 8  # readable by every onnxruntime the [cpu] extra allows
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained on CORPUS with SPECIALS registered (ids 0…13)."""
    tokenizers = _need("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _vocab_and_merges(tok) -> tuple[list, list]:
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for text, idx in vocab.items():
        tokens[idx] = text
    for added in data["added_tokens"]:
        tokens[added["id"]] = added["content"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, merges


# --------------------------------------------------------------------- GGUF

def build_gguf(path, *, width: int = WIDTH, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 128,
               context: int = 4096, seed: int = SEED, eos_first: bool = False) -> Path:
    """A tiny random-weight ``qwen2vl`` GGUF with the BPE tokenizer inside.

    The output rows of special and single-byte tokens are zero, so greedy
    decoding picks a multi-byte word piece (random logits, one of them is
    positive) and never stops early — every request runs to max_new_tokens,
    which keeps token counts predictable. ``eos_first=True`` zeroes the whole
    output matrix instead: every logit is 0, greedy picks id 0
    (``<|endoftext|>``, an end-of-generation token), so generation stops at once.
    """
    gguf = _need("gguf")
    tok = build_tokenizer()
    tokens, merges = _vocab_and_merges(tok)
    n_vocab = len(tokens)
    specials = set(SPECIALS)
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    head_dim = width // heads
    rng = np.random.default_rng(seed)

    def mat(rows, cols, scale=1.0):
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "qwen2vl")
    writer.add_name("rkvideo selftest (random weights)")
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    # M-RoPE: t/row/col sections; they must sum to head_dim / 2.
    writer.add_rope_dimension_sections([head_dim // 4, head_dim // 8, head_dim // 8, 0])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)

    writer.add_tensor("token_embd.weight", mat(n_vocab, width, np.sqrt(width)))
    for i in range(layers):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(width, np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", mat(width, width))
        writer.add_tensor(f"{blk}.attn_q.bias", np.zeros(width, np.float32))
        writer.add_tensor(f"{blk}.attn_k.weight", mat(kv_heads * head_dim, width))
        writer.add_tensor(f"{blk}.attn_k.bias", np.zeros(kv_heads * head_dim, np.float32))
        writer.add_tensor(f"{blk}.attn_v.weight", mat(kv_heads * head_dim, width))
        writer.add_tensor(f"{blk}.attn_v.bias", np.zeros(kv_heads * head_dim, np.float32))
        writer.add_tensor(f"{blk}.attn_output.weight", mat(width, width))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(width, np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", mat(ffn, width))
        writer.add_tensor(f"{blk}.ffn_up.weight", mat(ffn, width))
        writer.add_tensor(f"{blk}.ffn_down.weight", mat(width, ffn))
    writer.add_tensor("output_norm.weight", np.ones(width, np.float32))
    output = mat(n_vocab, width, 4.0)
    if eos_first:
        output[:] = 0.0
    else:
        quiet = [i for i, t in enumerate(tokens) if t in specials or len(t) == 1]
        output[quiet] = 0.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# -------------------------------------------------------------------- media

def write_clip(path, *, seconds: float = 2.0, fps: int = 10, size: tuple = (160, 120)) -> Path:
    """A short H.264 clip (MPEG-4 Part 2 if this PyAV has no x264): a square crossing a gradient."""
    import av

    path = Path(path)
    w, h = size
    codec = "libx264"
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        codec = "mpeg4"
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        total = int(seconds * fps)
        for i in range(total):
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = ramp[None, :]
            img[..., 1] = 255 - ramp[None, :]
            img[..., 2] = 64
            x = int((w - 30) * i / max(1, total - 1))
            img[h // 2 - 15:h // 2 + 15, x:x + 30] = (255, 255, 255)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_image(path, *, colour: tuple, size: tuple = (160, 120)) -> Path:
    import cv2

    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = colour
    img[h // 4:3 * h // 4, w // 4:3 * w // 4] = (255 - np.array(colour)).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return Path(path)


# ------------------------------------------------------------------- config

CONFIG = """\
# Written by `rkvideo selftest`: tiny random-weight models. The text they
# produce is meaningless by design; they prove the pipeline runs.
[model]
profile = "{profile}"
vision = "encoder.onnx"
llm = "llm.gguf"
# The tiny models are shaped like {profile}, only smaller:
input_size = {size}
tokens_per_image = {tokens}
embed_width = {width}
max_context = {context}

[vision]
workers = 2
queue_size = 2

[llm]
max_new_tokens = 16
seed = {seed}
# One thread: the model is tiny, and more threads only wait on each other.
threads = 1

[describe]
frames = 4
"""


@dataclass
class Workdir:
    root: Path
    config: Path
    encoder: Path
    llm: Path
    clip: Path
    images: list


def build_workdir(root) -> Workdir:
    """Models, config.toml, a clip and two images in ``root``; all from fixed seeds."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    encoder = build_encoder(root / "encoder.onnx")
    llm = build_gguf(root / "llm.gguf")
    config = root / "config.toml"
    config.write_text(CONFIG.format(profile=PROFILE, size=INPUT_SIZE, tokens=TOKENS, width=WIDTH,
                                    context=MAX_CONTEXT, seed=SEED), encoding="utf-8")
    clip = write_clip(root / "clip.mp4")
    images = [write_image(root / "red.png", colour=(200, 30, 30)),
              write_image(root / "blue.png", colour=(30, 30, 200))]
    return Workdir(root=root, config=config, encoder=encoder, llm=llm, clip=clip, images=images)


# -------------------------------------------------------------------- run

STAGES = ("decode", "preprocess", "encode", "vision", "prefill", "generate")


def check(workdir=None) -> dict:
    """The self-test's report (``pass``, ``checks``, ``results``, ``timings``; ``error`` when the
    pipeline stopped). Built in ``workdir`` and kept there, or in a temporary folder removed afterwards
    (then ``workdir`` is None in the report). A missing extra raises ``SelftestError``; whatever else
    stops the pipeline is the self-test's finding, reported as a FAIL."""
    try:
        if workdir:
            return run(Path(workdir))
        with tempfile.TemporaryDirectory(prefix="rkvideo-selftest-") as tmp:
            report = run(Path(tmp))
            report["workdir"] = None
            return report
    except SelftestError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failure of the pipeline here is what the self-test reports
        return {"pass": False, "error": f"{type(exc).__name__}: {exc}", "checks": [], "results": {},
                "timings": {}}


def run(root) -> dict:
    """Build everything in ``root`` and describe the clip (twice) and the image pair."""

    report = {"pass": False, "workdir": str(root), "checks": [], "results": {}, "timings": {}}
    t0 = time.perf_counter()
    work = build_workdir(root)
    report["timings"]["build"] = round(time.perf_counter() - t0, 4)
    cfg = config_mod.load(work.config)
    t0 = time.perf_counter()
    with pipeline.Describer(cfg) as describer:
        report["timings"]["load"] = round(time.perf_counter() - t0, 4)
        streamed: list = []
        video = describer.describe_video(work.clip, on_text=streamed.append)
        images = describer.describe_images(work.images)
        again = describer.describe_video(work.clip)
    report["results"] = {"video": video.as_json(), "images": images.as_json(), "video_again": again.as_json()}
    checks = report["checks"]

    def check(name, ok, detail):
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    for name, result, frames in (("video", video, cfg.describe.frames), ("images", images, len(work.images))):
        check(f"{name} frames", len(result.frames) == frames, f"{len(result.frames)} of {frames}")
        check(f"{name} text", isinstance(result.text, str) and result.tokens.new >= 1,
              f"{result.tokens.new} new tokens")
        missing = [s for s in STAGES if s not in result.timings]
        check(f"{name} timings", not missing, "missing " + ", ".join(missing) if missing else "all stages")
        vision_rows = len(result.frames) * TOKENS
        check(f"{name} prompt tokens", result.tokens.prompt > vision_rows,
              f"{result.tokens.prompt} prefilled ({vision_rows} of them vision rows)")
    check("streamed text", "".join(streamed) == video.text, "on_text pieces join to the result")
    check("repeat is identical", again.text == video.text, "a second request sees nothing of the first")
    report["pass"] = all(c["ok"] for c in checks)
    return report
