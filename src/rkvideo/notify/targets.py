"""The configured notification targets: one MQTT broker and any number of webhooks.

Why a key per target: outbox rows name the target they are for, and must
still name it after a restart, so the key is what identifies the target and
nothing else — the broker's address without the password (changing the
password keeps the messages waiting), or the webhook's URL. Rows of a target
that is no longer configured wait in the outbox until ``notify.max_age``, so
commenting a target out for a while loses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..config import Config, hide_password

MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Broker:
    key: str                # mqtt://host:port or mqtts://host:port
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca: str | None          # CA file for TLS; None = the system's
    shown: str              # the configured URL without its password, for messages

    kind = "mqtt"


@dataclass(frozen=True)
class Webhook:
    key: str                # the URL
    url: str
    secret: str

    kind = "webhook"

    @property
    def shown(self) -> str:
        return hide_password(self.url)


def broker(config: Config) -> Broker | None:
    """The ``notify.mqtt`` broker (checked by ``config``), or None."""
    url = config.notify.mqtt
    if not url:
        return None
    parts = urlsplit(url)
    port = parts.port or MQTT_PORTS[parts.scheme]
    host = parts.hostname
    ca = str(config.resolve_path(config.notify.mqtt_ca)) if config.notify.mqtt_ca else None
    return Broker(key=f"{parts.scheme}://{host}:{port}", host=host, port=port, tls=parts.scheme == "mqtts",
                  username=unquote(parts.username) if parts.username is not None else None,
                  password=unquote(parts.password) if parts.password is not None else None,
                  ca=ca, shown=hide_password(url))


def webhooks(config: Config) -> list[Webhook]:
    """The ``notify.webhooks``, each once (a URL listed twice would get every message twice)."""
    hooks: dict[str, Webhook] = {}
    for hook in config.notify.webhooks:
        hooks.setdefault(hook["url"], Webhook(key=hook["url"], url=hook["url"], secret=hook.get("secret", "")))
    return list(hooks.values())


def targets(config: Config) -> list:
    """Every configured target: the broker first, then the webhooks."""
    found = broker(config)
    return ([found] if found else []) + webhooks(config)
