"""The configuration reference: every `HERALD_*` setting, its default, and which process reads it.

Built from the settings classes themselves, so `herald settings`, the operations guide and the
Kubernetes policy tests all read one source.
"""

import importlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from herald.stack import APPS
from kernel.settings import HeraldSettings

# Settings that hold credentials: they belong in a Secret, never in a ConfigMap.
SECRET_NAMES = frozenset({"database_url", "gateway_signing_key", "smtp_password"})
REQUIRED = object()  # marks a setting with no default


def settings_class(service: str) -> type[HeraldSettings]:
    """The one HeraldSettings subclass a service's config module defines."""
    module = importlib.import_module(APPS[service][1])
    (found,) = {
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, HeraldSettings) and obj.__module__ == module.__name__
    }
    return found


@dataclass
class Setting:
    name: str
    description: str = ""
    secret: bool = False
    # reader → default (REQUIRED when there is none)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        return f"HERALD_{self.name.upper()}"

    @property
    def required(self) -> bool:
        return any(value is REQUIRED for value in self.defaults.values())


def collect(classes: dict[str, type[BaseSettings]]) -> dict[str, Setting]:
    """Every field of the given settings classes, keyed by name, in first-seen order."""
    found: dict[str, Setting] = {}
    for reader, cls in classes.items():
        for name, info in cls.model_fields.items():
            setting = found.setdefault(name, Setting(name))
            described = info.description or _inherited_description(cls, name)
            setting.description = setting.description or described
            setting.secret = setting.secret or name in SECRET_NAMES or _is_secret(info.annotation)
            setting.defaults[reader] = REQUIRED if info.default is PydanticUndefined else info.default
    return found


def service_settings() -> dict[str, Setting]:
    return collect({service: settings_class(service) for service in APPS})


def _inherited_description(cls: type[BaseSettings], name: str) -> str:
    for base in cls.__mro__[1:]:
        info = getattr(base, "model_fields", {}).get(name)
        if info is not None and info.description:
            return str(info.description)
    return ""


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _show(value: Any) -> str:
    if value is REQUIRED:
        return "**required**"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    return f"`{value}`" if value != "" else '`""`'


def markdown_table(settings: dict[str, Setting]) -> str:
    """One row per setting: variable, default (per reader where they differ), readers, description."""
    lines = ["| Variable | Default | Read by | What it does |", "|---|---|---|---|"]
    for s in settings.values():
        values = {_show(v) for v in s.defaults.values()}
        if len(values) == 1:
            default = values.pop()
        else:
            default = ", ".join(f"{_show(v)} ({reader})" for reader, v in s.defaults.items())
        readers = "all six" if len(s.defaults) == len(APPS) else ", ".join(s.defaults)
        secret = " **Secret.**" if s.secret else ""
        lines.append(f"| `{s.env}` | {default} | {readers} | {s.description}{secret} |")
    return "\n".join(lines)
