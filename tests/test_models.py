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
