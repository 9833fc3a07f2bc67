"""The assembler against hand-built expectations: parts, placeholders, buffer order, interleave, budget."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rkvideo import assemble, models
from rkvideo.assemble import Images
from rkvideo.budget import BudgetError

QWEN = models.get("qwen2-vl-2b")
SMALL = dataclasses.replace(QWEN, tokens_per_image=4, embed_width=3, max_context=4096)


def numbered(n, t=4, e=3) -> np.ndarray:
    """Embeddings whose every value says where it belongs: frame·100 + token·10 + column."""
    f, k, c = np.meshgrid(np.arange(n), np.arange(t), np.arange(e), indexing="ij")
    return (f * 100 + k * 10 + c).astype(np.float32)


# ------------------------------------------------------------ placeholders and parts

def test_per_image_rule_gives_each_frame_its_stamp_and_placeholder():
    request = assemble.build(SMALL, "What happens?", numbered(3), [0.5, 1.5, 2.25], max_new_tokens=16)
    assert request.parts == (
        "Frame 1 at 0.5s: ", Images(0, 1), "\n",
        "Frame 2 at 1.5s: ", Images(1, 1), "\n",
        "Frame 3 at 2.2s: ", Images(2, 1), "\n",
        "What happens?",
    )
    assert request.user_text() == ("Frame 1 at 0.5s: <image>\nFrame 2 at 1.5s: <image>\n"
                                   "Frame 3 at 2.2s: <image>\nWhat happens?")
    assert request.user_text().count("<image>") == 3


def test_single_rule_has_one_placeholder_for_all_frames():
    request = assemble.build(SMALL, "What happens?", numbered(3), [0.5, 1.5, 2.5], rule=assemble.SINGLE,
                             max_new_tokens=16)
    assert request.parts == ("3 frames taken at 0.5s, 1.5s, 2.5s.\n", Images(0, 3), "\nWhat happens?")
    assert request.user_text("<image>").count("<image>") == 1


def test_image_sets_are_numbered_and_a_single_image_is_not():
    pair = assemble.build(SMALL, "Compare.", numbered(2), None, max_new_tokens=8)
    assert pair.parts == ("Image 1: ", Images(0, 1), "\n", "Image 2: ", Images(1, 1), "\n", "Compare.")
    assert pair.stamps == ()
    one = assemble.build(SMALL, "Describe.", numbered(1), None, max_new_tokens=8)
    assert one.parts == (Images(0, 1), "\n", "Describe.")


def test_qwen3_stamps_use_the_seconds_format():
    qwen3 = dataclasses.replace(models.get("qwen3-vl-2b"), tokens_per_image=4, embed_width=3, encoder_outputs=1)
    request = assemble.build(qwen3, "Q", numbered(2), [1.0, 61.25], max_new_tokens=8)
    assert request.parts[0] == "<1.0 seconds>" and request.parts[3] == "<61.2 seconds>"


# ------------------------------------------------------------ buffer

def test_buffer_is_one_contiguous_frame_major_float32_block():
    emb = np.asfortranarray(numbered(3))  # not C order on the way in
    request = assemble.build(SMALL, "Q", emb, [0, 1, 2], max_new_tokens=8)
    buf = request.embeddings
    assert buf.dtype == np.float32 and buf.flags.c_contiguous and buf.shape == (3, 4, 3)
    flat = buf.reshape(-1)
    # Frame 0's 4 rows, then frame 1's, then frame 2's: row r of the buffer is frame r//4, token r%4.
    expected = [f * 100 + k * 10 + c for f in range(3) for k in range(4) for c in range(3)]
    assert flat.tolist() == expected


def test_frame_rows_of_a_group_are_its_frames_in_order():
    request = assemble.build(SMALL, "Q", numbered(3), None, rule=assemble.SINGLE, max_new_tokens=8)
    rows = request.frame_rows(Images(1, 2))
    assert rows.shape == (8, 3)
    assert rows[:, 0].tolist() == [100, 110, 120, 130, 200, 210, 220, 230]


# ------------------------------------------------------------ DeepStack and shapes

def test_four_outputs_are_interleaved_per_token():
    t, d = 3, 2
    outputs = [np.arange(t * d, dtype=np.float32).reshape(1, t, d) + 1000 * k for k in range(4)]
    combined = assemble.combine_outputs(outputs, t, d)
    expected = np.array([[outputs[k][0, i, j] for k in range(4) for j in range(d)] for i in range(t)],
                        np.float32)
    assert combined.shape == (3, 8) and combined.flags.c_contiguous
    assert np.array_equal(combined, expected)
    # Token 1: merger row, then the three DeepStack rows — never output-major.
    assert combined[1].tolist() == [2, 3, 1002, 1003, 2002, 2003, 3002, 3003]


def test_one_output_passes_through():
    out = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(assemble.combine_outputs([out[None]], 4, 3), out)


def test_an_output_of_the_wrong_size_is_refused():
    with pytest.raises(assemble.ShapeError, match=r"output 1 .* expected 4×3"):
        assemble.combine_outputs([np.zeros((1, 4, 3)), np.zeros((1, 5, 3))], 4, 3)


@pytest.mark.parametrize("shape, expected", [
    ((1, 196, 1536), (196, 1536)),
    ((196, 1536), (196, 1536)),
    ((1, 1, 256, 896), (256, 896)),
    ((1, 64, 8, 8), (64, 64)),
])
def test_token_width_reads_tokens_and_width(shape, expected):
    assert assemble.token_width(shape) == expected


@pytest.mark.parametrize("shape", [(1, 1), (1536,), (1, 1, 1)])
def test_token_width_refuses_shapes_without_tokens(shape):
    with pytest.raises(assemble.ShapeError):
        assemble.token_width(shape)


@pytest.mark.parametrize("emb", [np.zeros((2, 5, 3)), np.zeros((2, 4, 6)), np.zeros((4, 3)), np.zeros((0, 4, 3))])
def test_embeddings_of_the_wrong_shape_are_refused_naming_the_profile(emb):
    with pytest.raises(assemble.ShapeError, match="qwen2-vl-2b"):
        assemble.build(SMALL, "Q", emb, None, max_new_tokens=8)


def test_deepstack_width_is_checked_against_the_outputs():
    qwen3 = dataclasses.replace(models.get("qwen3-vl-2b"), tokens_per_image=4, embed_width=3)
    assert qwen3.encoder_width == 12
    with pytest.raises(assemble.ShapeError):
        assemble.build(qwen3, "Q", numbered(1), None, max_new_tokens=8)
    assert assemble.build(qwen3, "Q", np.zeros((1, 4, 12)), None, max_new_tokens=8).width == 12


def test_timestamps_must_match_frames():
    with pytest.raises(assemble.ShapeError, match="2 timestamps for 3 frames"):
        assemble.build(SMALL, "Q", numbered(3), [0.0, 1.0], max_new_tokens=8)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="placeholder rule"):
        assemble.build(SMALL, "Q", numbered(1), None, rule="many", max_new_tokens=8)


# ------------------------------------------------------------ token accounting and budget

def test_token_accounting():
    request = assemble.build(QWEN, "Hi?", np.zeros((2, 196, 1536), np.float32), [0.0, 1.0], max_new_tokens=100)
    assert request.vision_tokens == 2 * (196 + 2)
    chat = QWEN.chat
    texts = [chat.system, chat.prefix, chat.postfix, "Frame 1 at 0.0s: ", "\n", "Frame 2 at 1.0s: ", "\n", "Hi?"]
    # The estimate: UTF-8 bytes plus one per text piece (an upper bound for byte-level BPE).
    assert request.prompt_tokens == sum(len(t.encode()) + 1 for t in texts)
    assert request.max_context == QWEN.max_context


def test_budget_refuses_a_request_that_cannot_fit():
    emb = np.zeros((10, 196, 1536), np.float32)  # 10 × 198 + 2048 new + the prompt > 4096
    with pytest.raises(BudgetError, match=r"fewer --frames or lower llm\.max_new_tokens"):
        assemble.build(QWEN, "Q", emb, None, max_new_tokens=2048)


def test_budget_counts_the_reserve_exactly_at_the_edge():
    emb = np.zeros((1, 4, 3), np.float32)
    fits = assemble.build(SMALL, "Q", emb, None, max_new_tokens=8, max_context=1000)
    used = fits.prompt_tokens + fits.vision_tokens + 8
    # The whole request must stay strictly below the context length.
    assemble.build(SMALL, "Q", emb, None, max_new_tokens=8, max_context=used + 1, reserve=0)
    with pytest.raises(BudgetError):
        assemble.build(SMALL, "Q", emb, None, max_new_tokens=8, max_context=used + 1, reserve=1)
    with pytest.raises(BudgetError):
        assemble.build(SMALL, "Q", emb, None, max_new_tokens=8, max_context=used, reserve=0)
