"""Config loading: lookup order, validation errors that name key and file."""
import dataclasses
from pathlib import Path

import pytest

from rkvideo import config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="config.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_documents_every_setting_with_its_default():
    example = config.read(ROOT / "config.toml")
    defaults = config.Config()
    text = (ROOT / "config.toml").read_text()
    for section in dataclasses.fields(config.Config):
        if section.name == "source":
            continue
        assert f"[{section.name}]" in text
        for f in dataclasses.fields(getattr(defaults, section.name)):
            assert f"\n{f.name} = " in text, f"{section.name}.{f.name} missing from config.toml"
        assert getattr(example, section.name) == getattr(defaults, section.name)


def test_values_are_read_into_typed_sections(tmp_path):
    path = write(tmp_path, '[model]\nprofile = "qwen3-vl-2b"\nvision = "enc.rknn"\n'
                           '[llm]\ntemperature = 1\nruntime = "1.3"\n[output]\nsidecars = ["vtt"]\n')
    cfg = config.read(path)
    assert cfg.model.profile == "qwen3-vl-2b"
    assert cfg.llm.temperature == 1.0 and isinstance(cfg.llm.temperature, float)
    assert cfg.output.sidecars == ["vtt"]
    assert cfg.resolve_path(cfg.model.vision) == tmp_path.resolve() / "enc.rknn"


@pytest.mark.parametrize("text, fragment", [
    ("[model]\nprofil = 'x'\n", "unknown key model.profil"),
    ("[modle]\n", "unknown section [modle]"),
    ("[vision]\nworkers = '3'\n", "vision.workers must be an integer"),
    ("[vision]\nworkers = true\n", "vision.workers must be an integer"),
    ("[vision]\nworkers = 0\n", "vision.workers must be at least 1"),
    ("[llm]\nruntime = '1.1'\n", "llm.runtime must be one of"),
    ("[describe]\nseek = 'slow'\n", "describe.seek must be one of"),
    ("[output]\nsidecars = ['srt']\n", "unknown kind 'srt'"),
    ("[watch]\nsettle_seconds = -1\n", "must not be negative"),
    ("[watch]\npatterns = [1]\n", "list of strings"),
    ("[describe]\nmode = 'movie'\n", "describe.mode must be one of"),
    ("[describe]\nframes_by = 'random'\n", "describe.frames_by must be one of"),
    ("[timeline]\nstep = 0\n", "timeline.step must be above 0"),
    ("[timeline]\nstart = 2.0\nend = 3.0\n", "timeline.end (3.0) must not be above timeline.start"),
    ("model = 3\n", "[model] must be a table"),
    ("[model\n", "not valid TOML"),
])
def test_bad_settings_name_the_key_and_the_file(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.read(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_lookup_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".config/rkvideo").mkdir(parents=True)
    write(home / ".config/rkvideo", "[describe]\nframes = 2\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(work)
    monkeypatch.delenv("RKVIDEO_CONFIG", raising=False)
    assert config.load().describe.frames == 2            # ~/.config
    write(work, "[describe]\nframes = 3\n")
    assert config.load().describe.frames == 3            # ./config.toml beats ~/.config
    env = write(tmp_path, "[describe]\nframes = 4\n", "env.toml")
    monkeypatch.setenv("RKVIDEO_CONFIG", str(env))
    assert config.load().describe.frames == 4            # $RKVIDEO_CONFIG beats ./config.toml
    flag = write(tmp_path, "[describe]\nframes = 5\n", "flag.toml")
    assert config.load(flag).describe.frames == 5        # --config beats everything


def test_named_config_must_exist(tmp_path, monkeypatch):
    monkeypatch.delenv("RKVIDEO_CONFIG", raising=False)
    with pytest.raises(config.ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.toml")
    monkeypatch.setenv("RKVIDEO_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(config.ConfigError, match="gone.toml: config file not found"):
        config.load()


def test_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RKVIDEO_CONFIG", raising=False)
    monkeypatch.setattr(config, "candidates", lambda explicit=None: [tmp_path / "none.toml"])
    assert config.load() == config.Config()


def test_xdg_config_home_replaces_dot_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RKVIDEO_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    for folder in ("home/.config/rkvideo", "xdg/rkvideo"):
        (tmp_path / folder).mkdir(parents=True)
    write(tmp_path / "home/.config/rkvideo", "[describe]\nframes = 2\n")      # not read: XDG wins
    write(tmp_path / "xdg/rkvideo", "[describe]\nframes = 6\n")
    assert config.candidates()[1] == tmp_path / "xdg/rkvideo/config.toml"
    assert config.load().describe.frames == 6


def test_database_defaults_to_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert config.Config().database_path() == tmp_path / "home/.local/share/rkvideo/rkvideo.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert config.Config().database_path() == tmp_path / "data/rkvideo/rkvideo.db"
    cfg = config.read(write(tmp_path, '[watch]\ndb = "state/jobs.db"\n'))
    assert cfg.database_path() == tmp_path.resolve() / "state/jobs.db"      # relative to the file


def test_a_config_error_is_a_usage_error():
    from rkvideo import errors
    assert issubclass(config.ConfigError, errors.UsageError)
    assert errors.exit_code(config.ConfigError("x")) == errors.EXIT_USAGE


def float_keys() -> list:
    """Every float setting, found by reading the dataclasses (a new one is covered without editing this)."""
    import typing
    keys = []
    for section in dataclasses.fields(config.Config):
        if section.name == "source":
            continue
        hints = typing.get_type_hints(section.default_factory)
        keys += [(section.name, name) for name, hint in hints.items() if hint is float]
    return keys


def test_every_float_setting_is_found():
    keys = float_keys()
    assert {("watch", "settle_seconds"), ("watch", "retry_backoff"), ("llm", "temperature"), ("llm", "top_p"),
            ("llm", "repeat_penalty")} <= set(keys)


@pytest.mark.parametrize("section, key", float_keys())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_non_finite_numbers_are_refused_with_the_key(tmp_path, section, key, value):
    """`settle_seconds = nan` never settled anything and `--once` never ended (issue 9, item 5)."""
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(config.ConfigError) as err:
        config.read(path)
    assert f"{section}.{key} must be a finite number" in str(err.value)
    assert str(path) in str(err.value)


def test_non_finite_number_is_a_usage_error_on_the_command_line(tmp_path, capsys):
    from rkvideo import cli
    path = write(tmp_path, "[watch]\nsettle_seconds = nan\n")
    code = cli.main(["describe", "x.mp4", "--dry-run", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"rkvideo: error: {path}: watch.settle_seconds must be a finite number, got nan"
