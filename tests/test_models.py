"""Model profiles: facts, overrides, `rkvideo models`."""
import json

import pytest

from rkvideo import cli, config, models


def test_every_family_of_the_mission_is_present():
    for name in ["qwen2-vl-2b", "qwen2-vl-7b", "qwen2.5-vl-3b", "qwen3-vl-2b", "qwen3-vl-4b", "internvl3-1b",
                 "internvl3.5-1b", "internvl3.5-2b", "internvl3.5-4b", "internvl3.5-8b", "smolvlm2-256m",
                 "smolvlm2-500m", "smolvlm2-2.2b"]:
        assert models.get(name).name == name


def test_reference_facts():
    q2 = models.get("qwen2-vl-2b")
    assert (q2.input_size, q2.tokens_per_image, q2.embed_width, q2.encoder_outputs) == (392, 196, 1536, 1)
    assert q2.img_start == "<|vision_start|>" and q2.img_content == "<|image_pad|>"
    q3 = models.get("qwen3-vl-2b")
    assert q3.encoder_outputs == 4 and q3.encoder_width == 4 * q3.embed_width and q3.tokens_per_image == 196
    iv = models.get("internvl3-1b")
    assert iv.img_start == "<img>" and iv.mean == models.IMAGENET_MEAN
    assert all(p.fill == 127.5 and p.normalize == "encoder" for p in models.PROFILES.values())


def test_overrides_replace_unverified_facts():
    cfg = config.ModelConfig(profile="qwen3-vl-2b", embed_width=1024, encoder_outputs=1)
    prof = models.resolve(cfg)
    assert prof.embed_width == 1024 and prof.encoder_width == 1024
    assert "embed_width" not in prof.unverified


def test_unknown_profile_lists_known_ones():
    with pytest.raises(models.UnknownProfile, match="qwen2-vl-2b"):
        models.get("llava")


def test_timestamps_in_prompt():
    assert models.get("qwen3-vl-2b").stamp(1, 2.25) == "<2.2 seconds>"
    assert models.get("smolvlm2-256m").stamp(3, 75.0) == "Frame from 01:15: "
    assert models.get("qwen2-vl-2b").stamp(2, 1.5) == "Frame 2 at 1.5s: "


def test_models_command_table_and_json(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-vl-4b" in out and "UNVERIFIED" in out
    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {d["name"]: d for d in data}
    assert by_name["qwen3-vl-2b"]["encoder_width"] == 4 * by_name["qwen3-vl-2b"]["embed_width"]
    assert "embed_width" in by_name["qwen3-vl-2b"]["unverified"]


def test_smolvlm2_profiles_match_the_downloadable_rk3588_conversions():
    """Qengineering's conversions, the only public RK3588 ones, take 384² at every size (issue 10)."""
    for name in ("smolvlm2-256m", "smolvlm2-500m", "smolvlm2-2.2b"):
        p = models.get(name)
        assert p.input_size == 384 and "input_size" not in p.unverified, name
        assert {"tokens_per_image", "embed_width", "img_start", "img_end", "img_content", "chat"} <= set(p.unverified)
        # The tags Qengineering's SmolVLM2 apps pass; no longer RKLLM's own "<image>" placeholder as content.
        assert (p.img_start, p.img_end, p.img_content) == models.QWEN_TAGS and p.img_content != "<image>"
        assert p.chat == models.SMOL_CHAT and p.min_runtime == "1.2.2"
    assert [models.get(n).tokens_per_image for n in ("smolvlm2-256m", "smolvlm2-500m", "smolvlm2-2.2b")] == [36, 36, 81]


def test_minimum_runtime_per_family():
    wanted = {"qwen2-vl": "1.2.1", "qwen2.5-vl": "1.2.1", "qwen3-vl": "1.2.3", "internvl3": "1.2.2",
              "internvl3.5": "1.2.3", "smolvlm2": "1.2.2"}
    assert {p.family: p.min_runtime for p in models.PROFILES.values()} == wanted


def test_token_count_maps_back_to_the_input_side_where_the_arithmetic_is_known():
    assert models.get("qwen2-vl-2b").side_for(196) == 392
    assert models.get("qwen2.5-vl-3b").side_for(289) == 476 and models.get("qwen2.5-vl-3b").side_for(256) == 448
    assert models.get("qwen3-vl-2b").side_for(196) == 448
    assert models.get("internvl3-1b").side_for(256) == 448
    assert models.get("qwen2-vl-2b").side_for(200) is None          # not a square grid
    assert models.get("smolvlm2-500m").side_for(36) is None         # no source gives SmolVLM's arithmetic
    for p in models.PROFILES.values():                              # every profile agrees with itself
        assert p.side_for(p.tokens_per_image) in (None, p.input_size), p.name


def test_smolvlm_tags_stay_overridable():
    cfg = config.ModelConfig(profile="smolvlm2-500m", img_start=models.IDEFICS3_TAGS[0],
                             img_end=models.IDEFICS3_TAGS[1], img_content=models.IDEFICS3_TAGS[2], tokens_per_image=64)
    prof = models.resolve(cfg)
    assert (prof.img_start, prof.img_end, prof.img_content) == models.IDEFICS3_TAGS
    assert prof.tokens_per_image == 64
    assert not {"img_start", "img_end", "img_content", "tokens_per_image"} & set(prof.unverified)
    assert "chat" in prof.unverified


def test_models_command_marks_smolvlm_tags_unverified(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    smol = next(line for line in out.splitlines() if line.startswith("smolvlm2-500m "))
    assert smol.split()[1:4] == ["384", "36*", "960*"] and "≥ 1.2.2" in smol
    assert smol.endswith("<|vision_start|> / <|image_pad|> / <|vision_end|>*")
    qwen = next(line for line in out.splitlines() if line.startswith("qwen2-vl-2b "))
    assert not qwen.endswith("*") and "≥ 1.2.1" in qwen
    family = next(line for line in out.splitlines() if line.strip().startswith("smolvlm2 (every size):"))
    assert "Qwen tags Qengineering's SmolVLM2 apps pass, UNVERIFIED" in family and "#420" in family
    assert cli.main(["models", "--json"]) == 0
    by_name = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert by_name["smolvlm2-2.2b"]["family_notes"].startswith("image tags: the Qwen tags")
    assert by_name["smolvlm2-2.2b"]["min_runtime"] == "1.2.2" and "chat" in by_name["smolvlm2-2.2b"]["unverified"]
    assert by_name["qwen2-vl-2b"]["family_notes"] == ""
