"""Settings: one TOML file read into typed dataclasses.

Why dataclasses and a hand-written checker instead of a schema library: the
core install must stay light (the board is a small ARM computer) and the error
a user sees for a typo must name the key and the file, which generic TOML
loaders do not do. Every setting has a default, so an empty file is valid and
`rkvideo describe --dry-run` works with no config at all.

Lookup order (first hit wins): ``--config PATH``, ``$RKVIDEO_CONFIG``,
``./config.toml``, ``$XDG_CONFIG_HOME/rkvideo/config.toml`` (``~/.config/...``
when it is unset), ``/etc/rkvideo/config.toml``. The per-user folders come from
platformdirs, which follows the XDG base-directory rules instead of assuming
``~/.config`` and ``~/.local/share``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


APP = "rkvideo"


class ConfigError(UsageError):
    """A setting is missing, misspelled or of the wrong type (a usage error: exit status 2)."""


@dataclass
class ModelConfig:
    # Profile name from `rkvideo models` (family and size, e.g. "qwen2-vl-2b").
    profile: str = "qwen2-vl-2b"
    # Vision encoder: .rknn (NPU) or .onnx (any PC). The runtime follows the suffix.
    vision: str = ""
    # LLM: .rkllm (NPU) or .gguf (any PC). The runtime follows the suffix.
    llm: str = ""
    # Overrides for profile facts; 0 / "" means "use the profile's value".
    # Facts marked UNVERIFIED in `rkvideo models` are the ones to check here.
    input_size: int = 0
    tokens_per_image: int = 0
    embed_width: int = 0
    encoder_outputs: int = 0
    img_start: str = ""
    img_end: str = ""
    img_content: str = ""
    # .rknn only: "encoder" = mean/std baked in (stock), "host" = normalise here.
    # An .onnx encoder is fed what its input type asks for (float32 NCHW = host-normalised).
    normalize: str = ""
    max_context: int = 0


@dataclass
class VisionConfig:
    # Parallel encoder instances: one per NPU core on RK3588 (3), threads on a PC.
    workers: int = 3
    # Frames decoded ahead of the encoders (bounded queue size).
    queue_size: int = 4


@dataclass
class LLMConfig:
    # librkllmrt.so struct layout: "auto" (read from the library), "1.2" or "1.3".
    runtime: str = "auto"
    # Path to librkllmrt.so; empty = search /usr/lib, /usr/local/lib, $LD_LIBRARY_PATH.
    library: str = ""
    max_new_tokens: int = 512
    # Tokens kept free for chat template and tags the estimate cannot see.
    reserve: int = 64
    # Sampling; the defaults are those of Rockchip's demos (top_k 1 = greedy).
    top_k: int = 1
    top_p: float = 0.9
    temperature: float = 0.8
    repeat_penalty: float = 1.1
    # llama.cpp only: CPU threads (0 = all cores) and RNG seed.
    threads: int = 0
    seed: int = 0


@dataclass
class DescribeConfig:
    frames: int = 8
    prompt: str = "Describe what happens in this video."
    image_prompt: str = "Describe these images."
    # "fast" (keyframes when close enough) or "exact" (first frame at or after each target).
    seek: str = "fast"
    # Photos that would decode larger are refused before decoding. PNG, BMP, WebP and TIFF decode at full
    # size (about 6 bytes a pixel at the peak); a JPEG counts at the reduced size it is decoded at.
    max_image_megapixels: float = 50.0
    # "clip": one caption from frames over the whole recording; "timeline": find the moments where
    # something happens and describe each (see [timeline]); "auto": timeline above timeline.min_duration.
    mode: str = "clip"
    # Clip mode: "uniform" (evenly spaced) or "activity" (the first frame, the rest where things change).
    frames_by: str = "uniform"


@dataclass
class WatchConfig:
    patterns: list = field(default_factory=lambda: ["*.mp4", "*.avi", "*.mov", "*.mkv"])
    recursive: bool = True
    settle_seconds: float = 5.0
    max_attempts: int = 3
    # Seconds before the first retry; doubles with every further attempt.
    retry_backoff: float = 30.0
    # Empty: rkvideo.db in the per-user data folder, $XDG_DATA_HOME/rkvideo (~/.local/share/rkvideo).
    # A postgresql:// URL: a database several boards share.
    db: str = ""
    # Watched folders by name, e.g. {cameras = "/mnt/nas/cameras"}: boards that mount one share at
    # different places agree on a recording by its folder's name and the path below it.
    roots: dict = field(default_factory=dict)
    # Describe files reached through a symbolic link whose real path is outside the watched folders.
    follow_symlinks: bool = False


@dataclass
class OutputConfig:
    # Any of "txt", "json", "vtt"; written next to each recording (or under `dir`).
    sidecars: list = field(default_factory=list)
    dir: str = ""
    # Small JPEGs of the frames the model saw, in <database>.thumbnails/ beside the database (for `rkvideo serve`).
    thumbnails: bool = True


@dataclass
class ServeConfig:
    # `rkvideo serve`: where the web page listens. Any host but the loopback needs `token`.
    host: str = "127.0.0.1"
    port: int = 8765
    # Asked for by a login form (or sent as `Authorization: Bearer TOKEN`); "" = no login (loopback only).
    token: str = ""


@dataclass
class NotifyConfig:
    # MQTT broker: "mqtt://user:password@host:1883" or "mqtts://…:8883" (TLS); "" = no MQTT.
    mqtt: str = ""
    # CA certificate file for mqtts:// ("" = the system's CAs).
    mqtt_ca: str = ""
    # Webhooks: [{ url = "https://…", secret = "…" }]; each gets every message as a signed POST.
    webhooks: list = field(default_factory=list)
    # Topics: <topic_prefix>/available, /events, /errors, /queue, /<camera>/last, /<camera>/events.
    topic_prefix: str = "rkvideo"
    # Home Assistant MQTT discovery (with mqtt only) and its topic prefix.
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    # Seconds a message may wait for its target before it is dropped (with a log line).
    max_age: float = 86400.0
    # `watch --once`: seconds to wait for pending messages to be delivered before exiting.
    flush_timeout: float = 30.0
    # Seconds before a failed delivery is tried again; doubles each time, up to retry_max.
    retry_backoff: float = 2.0
    retry_max: float = 300.0
    # Seconds to wait for a broker or web server to answer one connection or request.
    timeout: float = 10.0
    # The public address of `rkvideo serve`: with it, messages carry clip and thumbnail URLs.
    base_url: str = ""
    clip_path: str = "/recordings/{job_id}#t={start_seconds}"
    thumbnail_path: str = "/thumbnails/{description_id}/{frame}.jpg"


@dataclass
class TimelineConfig:
    # describe.mode = "auto": recordings longer than this many seconds get a timeline.
    min_duration: float = 120.0
    # Activity analysis: seconds per activity sample.
    step: float = 0.5
    # Decode a keyframe at least this often in quiet stretches (seconds); busy ones decode every keyframe.
    thumbnail_every: float = 8.0
    # All-intra streams (MJPEG): frames looked at per second.
    intra_fps: float = 2.0
    # An event starts where activity is `start` noise widths above the recording's own baseline and
    # ends where it falls below `end` (hysteresis); compressed frames must also be `min_rise` (a
    # fraction) above the baseline, and a keyframe thumbnail counts when `min_area` of the picture changed.
    start: float = 4.0
    end: float = 2.0
    min_rise: float = 0.25
    min_area: float = 0.002
    # Seconds of recording around each moment the baseline is taken from.
    baseline_window: float = 120.0
    # Events shorter than this are dropped, gaps shorter than `merge_gap` joined, `pad` added on both sides.
    min_event: float = 1.0
    merge_gap: float = 2.0
    pad: float = 1.0
    # Describing: events closer than `segment_gap` share one request; a request covers at most
    # `max_segment` seconds; frames in one request are at least `min_frame_gap` seconds apart.
    segment_gap: float = 10.0
    max_segment: float = 60.0
    min_frame_gap: float = 1.0
    prompt: str = "Describe what happens in this part of the recording."
    summary_prompt: str = ("Summarise what happens in the recording in a few sentences, "
                           "mentioning when the main moments happen.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    timeline: TimelineConfig = field(default_factory=TimelineConfig)
    # Where the settings came from (None = built-in defaults). Not a TOML key.
    source: Path | None = field(default=None, compare=False)

    def resolve_path(self, value: str) -> Path:
        """Paths in a config file are relative to that file, not to the CWD."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def database_path(self) -> Path | str:
        """``watch.db`` (a URL as it is), or ``rkvideo.db`` in the per-user data folder when it is not set."""
        if is_url(self.watch.db):
            return self.watch.db
        return self.resolve_path(self.watch.db) if self.watch.db else default_database()

    def roots(self) -> dict:
        """``watch.roots`` with each folder resolved (relative to this file)."""
        return {name: self.resolve_path(folder) for name, folder in self.watch.roots.items()}


def is_url(target) -> bool:
    """``postgresql://…`` and the like, as opposed to a database file path."""
    return isinstance(target, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target) is not None


def user_config() -> Path:
    """``$XDG_CONFIG_HOME/rkvideo/config.toml``, ``~/.config/rkvideo/config.toml`` when it is unset."""
    return platformdirs.user_config_path(APP) / "config.toml"


def default_database() -> Path:
    """``$XDG_DATA_HOME/rkvideo/rkvideo.db``, ``~/.local/share/rkvideo/rkvideo.db`` when it is unset."""
    return platformdirs.user_data_path(APP) / "rkvideo.db"


CHOICES = {
    ("model", "normalize"): ("", "encoder", "host"),
    ("llm", "runtime"): ("auto", "1.2", "1.3"),
    ("describe", "seek"): ("fast", "exact"),
    ("describe", "mode"): ("clip", "timeline", "auto"),
    ("describe", "frames_by"): ("uniform", "activity"),
}
POSITIVE = {("vision", "workers"), ("vision", "queue_size"), ("llm", "max_new_tokens"),
            ("describe", "frames"), ("watch", "max_attempts"), ("describe", "max_image_megapixels")}
# Settings that must be above zero (a zero would divide, or never end a loop).
NOT_ZERO = {("timeline", "step"), ("timeline", "intra_fps"), ("timeline", "max_segment"),
              ("timeline", "thumbnail_every"), ("timeline", "start"), ("timeline", "end")}
SIDECARS = ("txt", "json", "vtt")
NOT_EMPTY = {("describe", "prompt"), ("describe", "image_prompt")}
# The largest integer setting: the runtimes take them as 32-bit C ints.
INT_MAX = 2**31 - 1
# Lists of tables rather than of strings, each checked by its own function below.
TABLE_LISTS = {("notify", "webhooks")}


def candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The files tried, in order."""
    if explicit:
        return [Path(explicit).expanduser()]
    if os.environ.get("RKVIDEO_CONFIG"):
        return [Path(os.environ["RKVIDEO_CONFIG"]).expanduser()]
    return [Path("config.toml"), user_config(), Path("/etc/rkvideo/config.toml")]


def load(explicit: str | os.PathLike | None = None) -> Config:
    """Find and read the config; defaults when no file exists.

    An explicitly named file (flag or environment) must exist.
    """
    paths = candidates(explicit)
    must_exist = bool(explicit) or bool(os.environ.get("RKVIDEO_CONFIG"))
    for path in paths:
        if _is_file(path):
            return read(path)
    if must_exist:
        raise ConfigError(f"{paths[0]}: config file not found")
    return Config()


def _is_file(path: Path) -> bool:
    """``path`` is a file; a folder on the way that this user may not search is an error naming it
    (``./config.toml`` from a working directory the user cannot read), not a traceback and not a
    silent skip to the next file of the lookup order."""
    try:
        return path.is_file()
    except OSError as exc:
        where = "the current folder" if not path.is_absolute() else str(path.parent)
        raise ConfigError(f"{path}: cannot look for a config file in {where}: {exc.strerror} (run rkvideo from a "
                          f"folder this user can read, or name the file with --config or $RKVIDEO_CONFIG)") from None


def read(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          f"save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return from_dict(data, path)


def from_dict(data: dict, path: Path | None = None) -> Config:
    where = str(path) if path else "<config>"
    config = Config(source=path.resolve() if path else None)
    sections = {f.name for f in dataclasses.fields(Config) if f.name != "source"}
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"{where}: unknown section [{name}] (known: {', '.join(sorted(sections))})")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        _fill(getattr(config, name), name, table, where)
    if config.timeline.end > config.timeline.start:
        raise ConfigError(f"{where}: timeline.end ({config.timeline.end}) must not be above timeline.start "
                          f"({config.timeline.start}): an event ends below the level it starts at")
    return config


def _fill(target, section: str, table: dict, where: str) -> None:
    hints = typing.get_type_hints(type(target))
    known = {f.name for f in dataclasses.fields(target)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {section}.{key} (known: {', '.join(sorted(known))})")
        setattr(target, key, _check(section, key, value, hints[key], where))


def _check(section: str, key: str, value, hint, where: str):
    name = f"{section}.{key}"
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
                dict: "a table"}[hint]
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}: {name} must be {expected}, got {value!r}")
    if hint is float and not math.isfinite(value):
        # TOML allows nan and inf; `settle_seconds = nan` would never settle anything.
        raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
    if hint is int and value > INT_MAX:
        # Counts, sizes and seeds go into the runtimes' 32-bit fields.
        raise ConfigError(f"{where}: {name} must be at most {INT_MAX}, got {value!r}")
    if (section, key) in CHOICES and value not in CHOICES[(section, key)]:
        allowed = ", ".join(repr(c) for c in CHOICES[(section, key)] if c)
        raise ConfigError(f"{where}: {name} must be one of {allowed}, got {value!r}")
    if (section, key) == ("serve", "port") and value > 65535:
        raise ConfigError(f"{where}: {name} must be a port number (0-65535), got {value!r}")
    if (section, key) in POSITIVE and value < 1:
        raise ConfigError(f"{where}: {name} must be at least 1, got {value!r}")
    if (section, key) in NOT_ZERO and value <= 0:
        raise ConfigError(f"{where}: {name} must be above 0, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: {name} must not be negative, got {value!r}")
    if (section, key) in NOT_EMPTY and not value.strip():
        raise ConfigError(f"{where}: {name} must not be empty (it is the question the model is asked)")
    if hint is list and (section, key) not in TABLE_LISTS and not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: {name} must be a list of strings")
    if hint is dict:
        _check_roots(name, value, where)
    if section == "notify":
        _check_notify(key, value, f"{where}: {name}")
    if (section, key) == ("output", "sidecars"):
        bad = [s for s in value if s not in SIDECARS]
        if bad:
            raise ConfigError(f"{where}: output.sidecars: unknown kind {bad[0]!r} (known: {', '.join(SIDECARS)})")
    return value


# ------------------------------------------------------------------ [notify]

TOPIC_KEYS = ("topic_prefix", "discovery_prefix")
URL_KEYS = {"mqtt": ("mqtt", "mqtts"), "base_url": ("http", "https")}
WEBHOOK_KEYS = {"url", "secret"}
ABOVE_ZERO = ("timeout", "retry_backoff", "retry_max")
# The {names} notify.clip_path and notify.thumbnail_path may use.
URL_FIELDS = {"clip_path": {"job_id", "description_id", "camera", "start_seconds", "end_seconds"},
              "thumbnail_path": {"job_id", "description_id", "camera", "frame", "index", "seconds"}}


def _check_notify(key: str, value, where: str) -> None:
    """The [notify] values that have a shape: URLs, topic prefixes, webhook tables, URL templates."""
    if key in URL_KEYS and value:
        _check_url(value, URL_KEYS[key], where)
    elif key in TOPIC_KEYS and (not value or any(c in value for c in "+#\0") or value.strip("/") != value):
        raise ConfigError(f"{where} must be a topic without wildcards (+, #) or a leading or trailing /, "
                          f"got {value!r}")
    elif key == "webhooks":
        for n, hook in enumerate(value):
            _check_webhook(hook, f"{where}[{n}]")
    elif key in ABOVE_ZERO and value <= 0:
        raise ConfigError(f"{where} must be above 0, got {value!r}")
    elif key in URL_FIELDS:
        _check_template(value, URL_FIELDS[key], where)


def _check_template(value: str, allowed: set, where: str) -> None:
    """A path with {name} fields: only the names offered, no attribute or index lookups."""
    import string
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} in {value!r} (write {{{{ and }}}} for a literal brace)") from None
    bad = [name for name in names if name not in allowed]
    if bad:
        raise ConfigError(f"{where}: unknown field {{{bad[0]}}} (known: {', '.join(sorted(allowed))})")


def _check_url(value: str, schemes: tuple, where: str) -> None:
    from urllib.parse import urlsplit
    shown = hide_password(value)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{where} must look like {schemes[0]}://host{':1883' if 'mqtt' in schemes else ''} "
                          f"(or {schemes[1]}://), got {shown!r}")
    if port == 0:
        raise ConfigError(f"{where}: port 0 is not a port: {shown!r}")


def hide_password(url: str) -> str:
    """``url`` as it may be shown in a message or log: a password in it becomes ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _check_webhook(hook, where: str) -> None:
    if not isinstance(hook, dict):
        raise ConfigError(f'{where} must be a table: {{ url = "https://…", secret = "…" }}')
    unknown = set(hook) - WEBHOOK_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]} (known: url, secret)")
    if not isinstance(hook.get("url"), str):
        raise ConfigError(f"{where}.url must be set to the webhook's http:// or https:// address")
    if not isinstance(hook.get("secret", ""), str):
        raise ConfigError(f"{where}.secret must be a string")
    _check_url(hook["url"], ("http", "https"), f"{where}.url")
ROOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_roots(name: str, value: dict, where: str) -> None:
    """``watch.roots``: name = "folder", each name one plain word (it is part of every job's key)."""
    for root, folder in value.items():
        if not ROOT_NAME.fullmatch(root):
            raise ConfigError(f"{where}: {name}: {root!r} is not a usable folder name (letters, digits, "
                              f"'.', '_', '-'; no '/')")
        if not isinstance(folder, str) or not folder:
            raise ConfigError(f"{where}: {name}.{root} must be a folder path (a string)")
