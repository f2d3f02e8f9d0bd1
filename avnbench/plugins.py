"""Plugin discovery and the method registry (pluggy).

Installed distributions expose a module in the entry-point group ``avnbench``; every such module
may implement the hooks of :mod:`avnbench.hookspecs`. A plugin that fails to import or to register
is reported by name and the others still load. ``AVNBENCH_DISABLE_PLUGINS`` (comma-separated
entry-point names) blocks plugins before they are imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field

import pluggy

from avnbench import hookspecs
from avnbench.errors import ConfigError, PluginError
from avnbench.methods import Method, MethodCard, MethodConfig

ENTRY_POINT_GROUP = "avnbench"
DISABLE_ENV = "AVNBENCH_DISABLE_PLUGINS"
# Built-in features written as plugins, registered before (and exactly like) installed ones.
DEFAULT_PLUGINS: tuple[str, ...] = ("avnbench.reporting.tracking",)


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


@dataclass(frozen=True)
class RegisteredMethod:
    """A method class and where it came from."""

    cls: type[Method]
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def name(self) -> str:
        return self.cls.card.name

    @property
    def card(self) -> MethodCard:
        return self.cls.card


@dataclass
class Registry:
    """Every registered method, and the plugins that failed to load."""

    methods: dict[str, RegisteredMethod] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    pm: pluggy.PluginManager = field(default_factory=_new_plugin_manager)

    def get(self, name: str) -> RegisteredMethod:
        """The method called ``name``; an unknown name lists the known ones."""
        if name in self.methods:
            return self.methods[name]
        known = ", ".join(sorted(self.methods)) or "none (install a plugin: see CONTRIBUTING.md)"
        hint = ""
        if self.failures:
            hint = f" (plugins that failed to load: {', '.join(sorted(self.failures))})"
        raise ConfigError(f"unknown method {name!r}. Available: {known}{hint}")

    def names(self) -> list[str]:
        return sorted(self.methods)


def _check_method_class(cls: object, plugin: str) -> type[Method]:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not an avnbench Method")
    card = getattr(cls, "card", None)
    if not isinstance(card, MethodCard):
        raise PluginError(f"plugin {plugin!r}: {cls.__name__}.card must be a MethodCard")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, MethodConfig)):
        raise PluginError(f"plugin {plugin!r}: {cls.__name__}.Config must subclass MethodConfig")
    missing = [p for p in ("smoke", "quick", "paper") if p not in cls.Config.PRESETS]
    if missing:
        raise PluginError(f"plugin {plugin!r}: method {card.name!r} lacks presets {missing}")
    return cls


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def load_registry(extra_plugins: tuple[object, ...] = (), use_entry_points: bool = True) -> Registry:
    """Discover plugins and collect their methods.

    Args:
        extra_plugins: modules or objects with hook implementations to register directly
            (tests use this instead of installed entry points).
        use_entry_points: load installed plugins of the ``avnbench`` entry-point group.
    """
    registry = Registry()
    pm = registry.pm
    disabled = _disabled_names()
    sources: dict[str, tuple[str | None, str | None]] = {}

    candidates: list[tuple[str, object]] = [(name, importlib.import_module(name)) for name in DEFAULT_PLUGINS]
    candidates += [(getattr(p, "__name__", repr(p)), p) for p in extra_plugins]
    if use_entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled:
                registry.disabled.append(ep.name)
                continue
            try:
                module = ep.load()
            except Exception as e:  # a broken plugin must not take the others down
                registry.failures[ep.name] = f"{type(e).__name__}: {e}"
                continue
            dist = ep.dist
            sources[ep.name] = (dist.name if dist else None, dist.version if dist else None)
            candidates.append((ep.name, module))

    for name, plugin in candidates:
        if name in disabled:
            registry.disabled.append(name)
            continue
        try:
            pm.register(plugin, name=name)
        except Exception as e:
            registry.failures[name] = f"{type(e).__name__}: {e}"
            continue
        found: list[type[Method]] = []
        try:
            impl = [h for h in pm.hook.avnbench_register_methods.get_hookimpls() if h.plugin_name == name]
            for hook in impl:
                hook.function(register=found.append)
            for cls in found:
                _check_method_class(cls, name)
        except Exception as e:
            registry.failures[name] = f"{type(e).__name__}: {e}"
            continue
        dist_name, version = sources.get(name, (None, None))
        for cls in found:
            key = cls.card.name
            if key in registry.methods:
                other = registry.methods[key].plugin
                registry.failures[name] = (
                    f"method {key!r} is registered by both plugin {other!r} and plugin {name!r}"
                )
                continue
            registry.methods[key] = RegisteredMethod(cls, name, dist_name, version)
    return registry
