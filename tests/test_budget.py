"""The frame budget: max_frames = ⌊(ctx − prompt − new − reserve) / per_frame⌋."""
import pytest

from rkvideo import budget


def plan(requested, **kw):
    args = dict(max_context=4096, prompt_tokens=100, frame_tokens=198, max_new_tokens=2048, reserve=64)
    args.update(kw)
    return budget.plan(requested, **args)


def test_formula_and_cap():
    p = plan(20)
    assert p.max_frames == (4096 - 1 - 100 - 2048 - 64) // 198 == 9
    assert p.frames == 9 and p.capped
    assert p.total < 4096


def test_under_budget_is_not_capped():
    p = plan(8)
    assert (p.frames, p.capped) == (8, False)
    assert p.as_dict()["vision_tokens"] == 8 * 198


def test_exact_fit_edge():
    # The request must stay strictly below the context: one spare token fits 3 frames, none fits 2.
    p = plan(5, max_context=100 + 2048 + 64 + 3 * 198 + 1)
    assert p.max_frames == 3 and p.total == p.max_context - 1
    p = plan(5, max_context=100 + 2048 + 64 + 3 * 198)
    assert p.max_frames == 2


def test_budget_below_one_frame_names_the_setting_to_lower():
    with pytest.raises(budget.BudgetError, match="max_new_tokens"):
        plan(1, max_new_tokens=4000)


def test_requested_must_be_positive():
    with pytest.raises(budget.BudgetError):
        plan(0)


def test_estimate_never_undercounts_byte_level_bpe():
    # Each byte-level BPE token covers >= 1 byte, so bytes (+1 per piece) bound the count.
    text = "Describe what happens in this video. Ünïcode ✓ 视频"
    assert budget.estimate_tokens(text) >= len(text.encode("utf-8"))
    assert budget.estimate_tokens("") == 0
    assert budget.estimate_tokens("a", "b") == 4
