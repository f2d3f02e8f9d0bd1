"""Plugin discovery and the method registry (pluggy).

Installed distributions expose a module in the entry-point group ``avnbench``; every such module
may implement the hooks of :mod:`avnbench.hookspecs`. The built-in plugins of
:data:`DEFAULT_PLUGINS` are registered first, like pytest's ``default_plugins``. Every hook is
called through pluggy (``pm.hook``), so ``tryfirst``/``trylast`` and wrappers apply.

A plugin that fails to import or to register — whatever it raises, ``sys.exit()`` included — is
reported by name and the others still load. A method name that two plugins register is refused:
neither runs under that name until the user disables one. ``AVNBENCH_DISABLE_PLUGINS``
(comma-separated) takes distribution names, entry-point names and method names.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pluggy

from avnbench import hookspecs
from avnbench.errors import ConfigError, PluginError
from avnbench.methods import Method, MethodCard, MethodConfig

ENTRY_POINT_GROUP = "avnbench"
DISABLE_ENV = "AVNBENCH_DISABLE_PLUGINS"
REGISTER_HOOK = "avnbench_register_methods"

# Built-in plugins, registered before the installed ones, by module name. They are part of
# avnbench itself and cannot be disabled. Adding a module here is all it takes to register it.
DEFAULT_PLUGINS: tuple[str, ...] = ("avnbench.reporting.tracking",)


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: its name in the plugin manager and its distribution."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def describe(self) -> str:
        """``avnbench-x 0.1 (entry point 'x')``, or ``plugin 'x'`` for one without a distribution."""
        if self.distribution is None:
            return f"plugin {self.name!r}"
        version = f" {self.version}" if self.version else ""
        where = f" (entry point {self.entry_point!r})" if self.entry_point else " (built in)"
        return f"{self.distribution}{version}{where}"


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


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows avnbench's hook specifications and no plugin yet."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


@dataclass
class Registry:
    """Every usable method, and what went wrong with the plugins.

    ``pm`` holds every plugin that loaded; call lifecycle hooks through ``registry.pm.hook``.
    ``failures`` maps a plugin name to why it did not load (its hooks are never called);
    ``conflicts`` maps a refused method name to every registration of it; ``disabled`` lists the
    plugins and ``disabled_methods`` the methods that ``AVNBENCH_DISABLE_PLUGINS`` blocked;
    ``warnings`` are one-line notes (a disabled name that matches nothing, an unknown hook).
    """

    methods: dict[str, RegisteredMethod] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    disabled_methods: list[str] = field(default_factory=list)
    conflicts: dict[str, tuple[RegisteredMethod, ...]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    plugins: dict[str, PluginSource] = field(default_factory=dict)
    pm: pluggy.PluginManager = field(default_factory=new_plugin_manager)

    def get(self, name: str) -> RegisteredMethod:
        """The method called ``name``; a refused, disabled or unknown name says why and what to do."""
        if name in self.methods:
            return self.methods[name]
        if name in self.conflicts:
            raise ConfigError(self.conflict_message(name))
        if name in self.disabled_methods:
            raise ConfigError(f"method {name!r} is disabled by {DISABLE_ENV}; remove it from that variable to use it")
        known = ", ".join(sorted(self.methods)) or "none (install a plugin: see CONTRIBUTING.md)"
        hint = ""
        if self.failures:
            hint += f" (plugins that failed to load: {', '.join(sorted(self.failures))})"
        if self.disabled:
            hint += f" (plugins disabled by {DISABLE_ENV}: {', '.join(self.disabled)})"
        raise ConfigError(f"unknown method {name!r}. Available: {known}{hint}")

    def names(self) -> list[str]:
        return sorted(self.methods)

    def describe(self, plugin: str) -> str:
        """A plugin's name and distribution, for messages."""
        return self.plugins.get(plugin, PluginSource(plugin)).describe()

    def failure_message(self, plugin: str) -> str:
        """One line: which plugin failed to load and why."""
        return f"{self.describe(plugin)} failed to load: {self.failures[plugin]}"

    def conflict_message(self, name: str) -> str:
        """One line naming every distribution that registers method ``name`` and the way out."""
        sources = [self.plugins.get(r.plugin, PluginSource(r.plugin)) for r in self.conflicts[name]]
        labels = [s.describe() for s in sources]
        who = " and ".join(labels) if len(labels) == 2 else ", ".join(labels[:-1]) + " and " + labels[-1]
        both = "both " if len(labels) == 2 else ""
        keys = " or ".join(f"{DISABLE_ENV}={s.distribution or s.name}" for s in sources)
        return f"method {name!r} is registered by {both}{who}; neither is used: disable one with {keys}"

    def problems(self) -> list[str]:
        """Every failure, conflict and warning as one line each, for the CLI to show."""
        lines = [self.failure_message(p) for p in sorted(self.failures)]
        lines += [self.conflict_message(n) for n in sorted(self.conflicts)]
        return lines + list(self.warnings)


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


def normalize_distribution(name: str) -> str:
    """PEP 503 form of a distribution name: ``Avnbench_X`` → ``avnbench-x``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _why(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    return f"{type(e).__name__}: {e}"


class _Disable:
    """The names in ``AVNBENCH_DISABLE_PLUGINS`` and which of them matched something."""

    def __init__(self, raw: str):
        self.names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
        self.matched: set[str] = set()

    def hits(self, *, entry_point: str | None = None, distribution: str | None = None,
             plugin: str | None = None, method: str | None = None) -> bool:
        dist = normalize_distribution(distribution) if distribution else None
        found = [n for n in self.names
                 if n in (entry_point, plugin, method) or (dist and normalize_distribution(n) == dist)]
        self.matched.update(found)
        return bool(found)

    def unmatched(self) -> list[str]:
        return [n for n in self.names if n not in self.matched]


class _Loader:
    """One pass of discovery: registers plugins with ``pm`` and fills ``registry``."""

    def __init__(self, registry: Registry, disable: _Disable):
        self.registry = registry
        self.pm = registry.pm
        self.disable = disable

    def fail(self, name: str, why: str, plugin: object | None = None) -> None:
        self.registry.failures[name] = why
        if plugin is not None and self.pm.is_registered(plugin):
            self.pm.unregister(plugin)  # a plugin that failed never has its hooks called

    def add(self, plugin: object, source: PluginSource) -> None:
        """Register ``plugin``; whatever it raises is recorded as its failure."""
        self.registry.plugins[source.name] = source
        try:
            self.pm.register(plugin, name=source.name)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a plugin must not take the others down
            self.fail(source.name, _why(e), plugin)
            return
        for caller in self.pm.get_hookcallers(plugin) or []:
            if not caller.has_spec() and caller.name.startswith(f"{hookspecs.PROJECT}_"):
                self.registry.warnings.append(
                    f"{source.describe()} implements {caller.name}, which avnbench does not know "
                    "(a typo, or a plugin for a newer avnbench); it is never called"
                )

    def add_builtins(self, modules: Iterable[str]) -> None:
        from avnbench import __version__

        for module_name in modules:
            source = PluginSource(module_name, "avnbench", __version__)
            if self.disable.hits(plugin=module_name):
                self.registry.warnings.append(f"{DISABLE_ENV}: {module_name!r} is built in and cannot be disabled")
            try:
                module = importlib.import_module(module_name)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001
                self.registry.plugins[module_name] = source
                self.fail(module_name, _why(e))
                continue
            self.add(module, source)

    def add_entry_points(self) -> None:
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value))
        # Two distributions may declare the same entry-point name (one impersonating the other):
        # they then get names that say which distribution they belong to, and both still load.
        counts: dict[str, int] = {}
        for ep in eps:
            counts[ep.name] = counts.get(ep.name, 0) + 1
        for ep in eps:
            dist = ep.dist
            dist_name = dist.name if dist else None
            name = ep.name if counts[ep.name] == 1 else f"{dist_name}:{ep.name}"
            source = PluginSource(name, dist_name, dist.version if dist else None, ep.name)
            if self.disable.hits(entry_point=ep.name, distribution=dist_name, plugin=name):
                self.registry.plugins[name] = source
                self.registry.disabled.append(name)
                continue
            try:
                module = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - SystemExit at import too
                self.registry.plugins[name] = source
                self.fail(name, _why(e))
                continue
            self.add(module, source)

    def add_extras(self, plugins: Iterable[object]) -> None:
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or repr(plugin)
            if self.disable.hits(plugin=name):
                self.registry.plugins[name] = PluginSource(name)
                self.registry.disabled.append(name)
                continue
            self.add(plugin, PluginSource(name))

    def collect_methods(self) -> None:
        """Call the register hook once per plugin, through pluggy, and keep what each offers.

        Each plugin gets its own hook call (a subset caller without the other plugins'
        implementations; wrappers stay) so that a registration is attributed to the plugin
        that made it and one plugin's exception costs only its own methods.
        """
        hook = getattr(self.pm.hook, REGISTER_HOOK)
        impls = list(reversed(hook.get_hookimpls()))  # pluggy's call order
        registrants = [i.plugin for i in impls if not (i.wrapper or i.hookwrapper)]
        order = list(dict.fromkeys(self.pm.get_name(p) for p in registrants))
        by_name: dict[str, list[RegisteredMethod]] = {}
        for plugin_name in order:
            plugin = self.pm.get_plugin(plugin_name)
            others = [p for p in dict.fromkeys(registrants) if p is not plugin]
            found: list[object] = []
            try:
                self.pm.subset_hook_caller(REGISTER_HOOK, remove_plugins=others)(register=found.append)
                classes = [_check_method_class(cls, plugin_name) for cls in found]
                names = [cls.card.name for cls in classes]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:
                    raise PluginError(f"it registers {', '.join(map(repr, twice))} more than once")
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - SystemExit in the hook too
                self.fail(plugin_name, _why(e), plugin)
                continue
            source = self.registry.plugins[plugin_name]
            for cls in classes:
                if self.disable.hits(method=cls.card.name):
                    if cls.card.name not in self.registry.disabled_methods:
                        self.registry.disabled_methods.append(cls.card.name)
                    continue
                entry = RegisteredMethod(cls, plugin_name, source.distribution, source.version)
                by_name.setdefault(cls.card.name, []).append(entry)
        for method_name, entries in by_name.items():
            if len(entries) == 1:
                self.registry.methods[method_name] = entries[0]
            else:
                self.registry.conflicts[method_name] = tuple(
                    sorted(entries, key=lambda e: (e.distribution or "", e.plugin))
                )


def load_registry(extra_plugins: tuple[object, ...] = (), use_entry_points: bool = True) -> Registry:
    """Discover plugins and collect their methods.

    Args:
        extra_plugins: modules or objects with hook implementations to register directly
            (tests use this instead of installed entry points).
        use_entry_points: load installed plugins of the ``avnbench`` entry-point group.

    The built-in plugins of :data:`DEFAULT_PLUGINS` are always registered, first.
    """
    registry = Registry()
    disable = _Disable(os.environ.get(DISABLE_ENV, ""))
    loader = _Loader(registry, disable)
    loader.add_builtins(DEFAULT_PLUGINS)
    loader.add_extras(extra_plugins)
    if use_entry_points:
        loader.add_entry_points()
    loader.collect_methods()
    for name in disable.unmatched():
        registry.warnings.append(
            f"{DISABLE_ENV} names {name!r}, which matches no plugin distribution, entry point or "
            "method (`avnbench methods` lists them)"
        )
    return registry
