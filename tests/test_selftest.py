"""The self-test's builders (offline, seeded) and the `rkvideo selftest` command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_cpu_extra
from rkvideo import cli, config as config_mod, models


@pytest.fixture
def selftest():
    need_cpu_extra("onnx", "gguf", "tokenizers")
    from rkvideo import selftest
    return selftest


def test_encoder_is_shaped_like_the_tiny_profile(selftest, tmp_path):
    import onnx
    model = onnx.load(str(selftest.build_encoder(tmp_path / "e.onnx", outputs=4)))
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [dims(i) for i in model.graph.input] == [[1, 3, 56, 56]]
    assert [dims(o) for o in model.graph.output] == [[1, 16, 64]] * 4


def test_builders_are_deterministic(selftest, tmp_path):
    for name, build in (("e.onnx", selftest.build_encoder), ("l.gguf", selftest.build_gguf)):
        a, b = build(tmp_path / f"a-{name}"), build(tmp_path / f"b-{name}")
        assert a.read_bytes() == b.read_bytes(), name
        assert a.stat().st_size < 1_000_000


def test_tokenizer_keeps_every_tag_as_one_special_token(selftest):
    tok = selftest.build_tokenizer()
    for k, special in enumerate(selftest.SPECIALS):
        assert tok.token_to_id(special) == k
    ids = tok.encode("<|vision_start|><|image_pad|><|vision_end|>Describe this video.").ids
    assert ids[:3] == [3, 5, 4] and len(ids) > 4


def test_gguf_is_a_qwen2vl_model_with_mrope_sections_and_the_tokenizer(selftest, tmp_path):
    import gguf
    reader = gguf.GGUFReader(str(selftest.build_gguf(tmp_path / "l.gguf")))

    def value(key):
        field = reader.fields[key]
        parts = [field.parts[i] for i in field.data]
        if field.types[0] == gguf.GGUFValueType.STRING:
            return bytes(parts[0]).decode()
        return [p.tolist()[0] for p in parts] if len(parts) > 1 else parts[0].tolist()[0]

    assert value("general.architecture") == "qwen2vl"
    assert value("qwen2vl.embedding_length") == selftest.WIDTH
    sections = value("qwen2vl.rope.dimension_sections")
    head_dim = selftest.WIDTH // value("qwen2vl.attention.head_count")
    assert sections == [4, 2, 2, 0] and sum(sections) == head_dim // 2
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 512
    assert value("tokenizer.ggml.eos_token_id") == selftest.SPECIALS.index("<|im_end|>")
    types_ = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types_.parts[i][0]) for i in types_.data]
    assert kinds[:len(selftest.SPECIALS)] == [int(gguf.TokenType.CONTROL)] * len(selftest.SPECIALS)
    assert set(kinds[len(selftest.SPECIALS):]) == {int(gguf.TokenType.NORMAL)}


def test_the_written_config_overrides_the_profile(selftest, tmp_path):
    work = selftest.build_workdir(tmp_path / "w")
    cfg = config_mod.load(work.config)
    profile = models.resolve(cfg.model)
    base = models.get(selftest.PROFILE)
    shape = (profile.input_size, profile.tokens_per_image, profile.embed_width, profile.max_context)
    assert shape == (56, 16, 64, 1024)
    assert (profile.img_start, profile.chat) == (base.img_start, base.chat)
    assert cfg.resolve_path(cfg.model.vision) == work.encoder
    assert cfg.resolve_path(cfg.model.llm) == work.llm
    assert work.clip.stat().st_size > 0 and all(p.stat().st_size > 0 for p in work.images)


def test_selftest_passes_and_reports_json(tiny_models, tmp_path, capsys):
    code = cli.main(["selftest", "--workdir", str(tmp_path / "st"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["pass"] is True
    assert {c["name"] for c in report["checks"]} >= {"video frames", "images frames", "repeat is identical"}
    video = report["results"]["video"]
    assert len(video["frames"]) == 4 and video["tokens"]["new"] == 16
    assert (tmp_path / "st" / "config.toml").is_file()


def test_selftest_prints_pass_and_says_the_text_is_meaningless(tiny_models):
    # The installed entry point, as a user runs it; the temporary workdir is removed afterwards.
    exe = Path(sys.executable).with_name("rkvideo")
    command = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from rkvideo.cli import main; "
                                                                     "sys.exit(main())"]
    done = subprocess.run(command + ["selftest"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "PASS" and "meaningless by design" in lines[0]
    assert "prefill" in done.stdout and "decode" in done.stdout


def test_selftest_fails_when_a_repeat_differs(tiny_models, tmp_path, monkeypatch, capsys):
    from rkvideo.llm import llamacpp
    real = llamacpp.LlamaCpp.generate
    calls = []

    def stale(self, request, on_text=None):  # what a runtime keeping the last clip's state would do
        calls.append(1)
        gen = real(self, request, on_text)
        gen.text += f" (call {len(calls)})"
        return gen

    monkeypatch.setattr(llamacpp.LlamaCpp, "generate", stale)
    assert cli.main(["selftest", "--workdir", str(tmp_path / "st")]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] repeat is identical" in out and out.splitlines()[-1] == "FAIL"


def test_selftest_without_the_extra_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert cli.main(["selftest", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rkvideo: error:") and "pip install 'rkvideo[cpu]'" in err and "\n" not in err


def test_selftest_help_has_examples(capsys):
    assert cli.main(["selftest", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--workdir" in text and "rkvideo describe st/clip.mp4 --config st/config.toml" in text


def test_the_report_is_a_record_and_the_command_prints_it(tiny_models, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from rkvideo import selftest
    report = selftest.check(tmp_path / "st")                   # no printing below the command line
    assert report["pass"] is True and report["workdir"] == str(tmp_path / "st")
    monkeypatch.setattr(selftest, "check", lambda workdir=None: {**report, "pass": False})
    result = CliRunner().invoke(cli.rkvideo, ["selftest", "--workdir", str(tmp_path / "st")])
    assert result.exit_code == 1 and result.output.splitlines()[-1] == "FAIL"
    assert "[ok] repeat is identical" in result.output


def test_random_weights_have_no_special_or_byte_output_rows(selftest, tmp_path):
    import gguf
    reader = gguf.GGUFReader(str(selftest.build_gguf(tmp_path / "l.gguf")))
    output = next(t for t in reader.tensors if t.name == "output.weight")
    rows = np.asarray(output.data).reshape(512, selftest.WIDTH)
    assert not rows[:len(selftest.SPECIALS)].any()
    assert rows.any(axis=1).sum() > 100
