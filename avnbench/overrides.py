"""Config overrides on top of a preset: ``--set FIELD=VALUE``, ``--config FILE`` and shortcuts.

An override is either *shared* (``--set cpu_threads=1``: every method of the invocation whose
``Config`` has that field) or *scoped* to one method (``--set dynunet.epochs=10``; method
names never contain a dot). A config file is YAML or JSON: a mapping of fields (shared), of method
names to mappings of fields (scoped), or both. Values are parsed as YAML scalars (``3``, ``0.5``,
``true``, ``null``, ``[32, 64, 64]``). The resolved config, overrides included, is what the run key
hashes and what MLflow records as the run's params, so an override never reuses another run's
folds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avnbench.errors import ConfigError


class Overrides(BaseModel):
    """Shared and per-method field values, as given by the user."""

    model_config = ConfigDict(extra="forbid")

    shared: dict[str, Any] = Field(default_factory=dict)
    scoped: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def merged(self, other: "Overrides") -> "Overrides":
        """These overrides with ``other``'s on top (the later one wins field by field)."""
        scoped = {m: dict(v) for m, v in self.scoped.items()}
        for method, values in other.scoped.items():
            scoped.setdefault(method, {}).update(values)
        return Overrides(shared={**self.shared, **other.shared}, scoped=scoped)

    def for_method(self, method: str, config_cls: type[BaseModel]) -> dict[str, Any]:
        """The values that apply to ``method``: shared ones its config has, then its scoped ones."""
        fields = config_cls.model_fields
        values = {k: v for k, v in self.shared.items() if k in fields}
        values.update(self.scoped.get(method, {}))
        return values

    def check_against(self, configs: Mapping[str, type[BaseModel]]) -> None:
        """A ConfigError for a scoped method not in the invocation, or a field no method has."""
        for method, values in self.scoped.items():
            if method not in configs:
                raise ConfigError(
                    f"override for method {method!r}, which this command does not run "
                    f"(running: {', '.join(configs) or 'none'})"
                )
            unknown = sorted(set(values) - set(configs[method].model_fields))
            if unknown:
                raise ConfigError(_unknown_field(method, unknown[0], configs[method]))
        for name in self.shared:
            if not any(name in cls.model_fields for cls in configs.values()):
                allowed = sorted({f for cls in configs.values() for f in cls.model_fields})
                raise ConfigError(
                    f"no method of this command has a config field {name!r}. Allowed: {', '.join(allowed)}"
                )


def _unknown_field(method: str, name: str, config_cls: type[BaseModel]) -> str:
    return (f"method {method!r} has no config field {name!r}. Allowed: "
            f"{', '.join(sorted(config_cls.model_fields))} (see 'avnbench methods show {method}')")


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # not YAML: the plain string, validated by the method's Config


def parse_set(items: Iterable[str]) -> Overrides:
    """``["a=1", "dynunet.b=[1, 2]"]`` → shared {a: 1}, scoped {dynunet: {b: [1, 2]}}."""
    shared: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write FIELD=VALUE or METHOD.FIELD=VALUE, e.g. --set cpu_threads=1")
        method, dot, name = key.rpartition(".")
        if dot and (not method or not name):
            raise ConfigError(f"--set {item!r}: write METHOD.FIELD=VALUE, e.g. --set dynunet.epochs=10")
        (scoped.setdefault(method, {}) if dot else shared)[name] = _parse_value(value)
    return Overrides(shared=shared, scoped=scoped)


def load_config_file(path: Path, method_names: Sequence[str]) -> Overrides:
    """Read a YAML or JSON file of overrides; top-level keys that are method names are scoped."""
    import yaml

    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML or JSON{line}") from None
    if content is None:
        return Overrides()
    if not isinstance(content, dict):
        raise ConfigError(f"--config {path}: must be a mapping of fields, or of method names to fields")
    shared: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for key, value in content.items():
        if key in method_names or isinstance(value, dict) and "-" in str(key):
            if not isinstance(value, dict):
                raise ConfigError(f"--config {path}: {key!r} must map config fields to values")
            scoped[str(key)] = dict(value)
        else:
            shared[str(key)] = value
    return Overrides(shared=shared, scoped=scoped)


def resolve_config(method: str, config_cls: Any, preset: str, seed: int, values: Mapping[str, Any]) -> BaseModel:
    """The preset's config with ``values`` on top, or a one-line ConfigError naming the field."""
    unknown = sorted(set(values) - set(config_cls.model_fields))
    if unknown:
        raise ConfigError(_unknown_field(method, unknown[0], config_cls))
    try:
        return config_cls.preset(preset, **{"seed": seed, **values})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "config"
        raise ConfigError(f"method {method!r}, config field {field!r}: {err['msg']} (got {err.get('input')!r})") from None
