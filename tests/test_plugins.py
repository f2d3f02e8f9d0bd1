import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avnbench import hookimpl
from avnbench.errors import ConfigError
from avnbench.methods import Method, MethodCard, MethodConfig
from avnbench.plugins import load_registry


class _Dummy(Method):
    card = MethodCard(name="dummy", task="segmentation", description="d", citation="c")

    def fit(self, train_cases, val_cases, workdir, device):
        pass

    def predict(self, cases, workdir, device):
        yield from ()


class _GoodPlugin:
    __name__ = "good"

    @hookimpl
    def avnbench_register_methods(self, register):
        register(_Dummy)


class _BrokenPlugin:
    __name__ = "broken"

    @hookimpl
    def avnbench_register_methods(self, register):
        raise RuntimeError("boom")


class _NotAMethodPlugin:
    __name__ = "notamethod"

    @hookimpl
    def avnbench_register_methods(self, register):
        register(dict)


class _DuplicatePlugin:
    __name__ = "duplicate"

    @hookimpl
    def avnbench_register_methods(self, register):
        register(_Dummy)


def test_methods_register_through_the_hook():
    registry = load_registry((_GoodPlugin(),), use_entry_points=False)
    assert registry.get("dummy").cls is _Dummy
    assert registry.get("dummy").plugin == "good"


def test_a_broken_plugin_is_named_and_the_others_still_load():
    registry = load_registry((_BrokenPlugin(), _NotAMethodPlugin(), _GoodPlugin()), use_entry_points=False)
    assert "dummy" in registry.methods
    assert "boom" in registry.failures["broken"]
    assert "not an avnbench Method" in registry.failures["notamethod"]


def test_a_name_two_plugins_register_is_refused_naming_both():
    registry = load_registry((_GoodPlugin(), _DuplicatePlugin()), use_entry_points=False)
    assert "dummy" not in registry.methods and not registry.failures
    assert [e.plugin for e in registry.conflicts["dummy"]] == ["duplicate", "good"]
    with pytest.raises(ConfigError, match="'dummy' is registered by both plugin 'duplicate' and plugin 'good'"):
        registry.get("dummy")


def test_unknown_method_lists_the_known_ones():
    registry = load_registry((_GoodPlugin(),), use_entry_points=False)
    with pytest.raises(ConfigError, match="unknown method 'nope'. Available: dummy"):
        registry.get("nope")


def test_presets_are_required():
    class NoPresets(MethodConfig):
        PRESETS = {"smoke": {}}

    class Bad(_Dummy):
        card = MethodCard(name="bad", task="segmentation", description="d", citation="c")
        Config = NoPresets

    class Plugin:
        __name__ = "nopresets"

        @hookimpl
        def avnbench_register_methods(self, register):
            register(Bad)

    registry = load_registry((Plugin(),), use_entry_points=False)
    assert "lacks presets" in registry.failures["nopresets"]


def test_installed_builtin_plugin_is_discovered_through_entry_points():
    registry = load_registry()
    assert "threshold-baseline" in registry.names()
    assert registry.get("threshold-baseline").distribution == "avnbench-threshold-baseline"


def _fake_broken_distribution(root: Path) -> Path:
    dist = root / "avnbench_brokenplugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: avnbench-brokenplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[avnbench]\nbrokenplugin = avnbench_brokenplugin_mod\n")
    (root / "avnbench_brokenplugin_mod.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    return root


def test_broken_entry_point_plugin_is_reported_and_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_fake_broken_distribution(tmp_path)))
    registry = load_registry()
    assert "brokenplugin" in registry.failures
    assert "threshold-baseline" in registry.names()
    monkeypatch.setenv("AVNBENCH_DISABLE_PLUGINS", "brokenplugin")
    registry = load_registry()
    assert "brokenplugin" not in registry.failures and registry.disabled == ["brokenplugin"]


def test_cli_reports_a_broken_plugin_in_one_line(tmp_path):
    env_path = _fake_broken_distribution(tmp_path)
    import os

    env = os.environ | {"PYTHONPATH": str(env_path), "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-m", "avnbench.cli", "methods"], capture_output=True, encoding="utf-8", env=env)
    assert out.returncode == 0, out.stderr
    assert "brokenplugin" in out.stderr and "Traceback" not in out.stderr
    assert "threshold-baseline" in out.stdout


# --- pluggy machinery: hooks go through pm.hook, failed plugins are unregistered -------------


class _CountingWrapper:
    """A hook wrapper: it only sees calls made through pluggy's machinery."""

    __name__ = "counting"

    def __init__(self):
        self.calls = 0

    @hookimpl(wrapper=True)
    def avnbench_register_methods(self, register):
        self.calls += 1
        return (yield)


def test_the_register_hook_goes_through_pluggy_so_wrappers_apply():
    wrapper = _CountingWrapper()
    registry = load_registry((wrapper, _GoodPlugin(), _BrokenPlugin()), use_entry_points=False)
    assert wrapper.calls == 2  # once per registering plugin
    assert registry.names() == ["dummy"]


def test_the_plugin_manager_holds_the_loaded_plugins_and_not_the_failed_ones():
    registry = load_registry((_GoodPlugin(), _BrokenPlugin()), use_entry_points=False)
    assert registry.pm.get_plugin("good") is not None
    assert registry.pm.get_plugin("broken") is None
    assert registry.pm.hook.avnbench_register_methods.has_spec()


class _SystemExitInHook:
    __name__ = "exits"

    @hookimpl
    def avnbench_register_methods(self, register):
        register(_Dummy)
        raise SystemExit(0)


class _TypoPlugin:
    __name__ = "typo"

    @hookimpl
    def avnbench_registr_methods(self, register):
        register(_Dummy)


@pytest.mark.parametrize(
    "plugin, key, fragment",
    [
        (_SystemExitInHook(), "failures", "it called sys.exit(0)"),
        (_NotAMethodPlugin(), "failures", "not an avnbench Method"),
        (_TypoPlugin(), "warnings", "implements avnbench_registr_methods, which avnbench does not know"),
    ],
    ids=["sys-exit-in-hook", "not-a-method", "unknown-hook"],
)
def test_a_misbehaving_plugin_is_reported_and_the_good_one_loads(plugin, key, fragment):
    registry = load_registry((plugin, _GoodPlugin()), use_entry_points=False)
    assert registry.names() == ["dummy"]
    reported = registry.failures.get(plugin.__name__, "") if key == "failures" else " ".join(registry.warnings)
    assert fragment in reported


def test_default_plugins_register_first_and_may_have_no_hooks(tmp_path, monkeypatch):
    import avnbench.plugins as plugins

    (tmp_path / "avnbench_builtin_probe.py").write_text(textwrap.dedent('''
        from avnbench import hookimpl
        from avnbench.methods import Method, MethodCard

        class Probe(Method):
            card = MethodCard(name="probe", task="segmentation", description="d", citation="c")
            def fit(self, train_cases, val_cases, workdir, device): pass
            def predict(self, cases, workdir, device): yield from ()

        @hookimpl
        def avnbench_register_methods(register):
            register(Probe)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", ("avnbench.errors", "avnbench_builtin_probe", "avnbench_missing_mod"))
    registry = load_registry((_GoodPlugin(),), use_entry_points=False)
    assert registry.pm.get_plugin("avnbench.errors") is not None  # a module without hookimpls
    assert registry.get("probe").distribution == "avnbench"
    assert "ModuleNotFoundError" in registry.failures["avnbench_missing_mod"]
    assert registry.names() == ["dummy", "probe"]


# --- installed-looking distributions, through the real CLI -----------------------------------

IMPOSTOR = '''
from avnbench import hookimpl
from avnbench.methods import Method, MethodCard

class Impostor(Method):
    card = MethodCard(name="threshold-baseline", task="segmentation", description="not the baseline", citation="-")
    def fit(self, train_cases, val_cases, workdir, device): raise RuntimeError("the impostor ran")
    def predict(self, cases, workdir, device): yield from ()

@hookimpl
def avnbench_register_methods(register):
    register(Impostor)
'''
EXITS_AT_IMPORT = "import sys\nsys.exit(3)\n"
RAISES_AT_IMPORT = "raise ImportError('broken on purpose')\n"
RAISES_IN_HOOK = (
    "from avnbench import hookimpl\n\n@hookimpl\ndef avnbench_register_methods(register):\n"
    "    raise RuntimeError('hook boom')\n"
)
# Each fake: (distribution, entry-point name, module name, module source).
FAKES = {
    "impostor": ("avnbench-impostor", "impostor", "avnbench_impostor", IMPOSTOR),
    "same-entry-point": ("avnbench-lookalike", "threshold_baseline", "avnbench_lookalike", IMPOSTOR),
    "exits": ("avnbench-exiter", "exiter", "avnbench_exiter", EXITS_AT_IMPORT),
    "raises": ("avnbench-raiser", "raiser", "avnbench_raiser", RAISES_AT_IMPORT),
    "hook-raises": ("avnbench-hookraiser", "hookraiser", "avnbench_hookraiser", RAISES_IN_HOOK),
}


def _install_fake(root: Path, fake: str) -> None:
    dist, ep_name, module, source = FAKES[fake]
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[avnbench]\n{ep_name} = {module}\n")
    (root / f"{module}.py").write_text(source)


def _avnbench(root: Path, args: list[str], disable: str | None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "AVNBENCH_DISABLE_PLUGINS"}
    env |= {"PYTHONPATH": str(root), "PYTHONIOENCODING": "utf-8", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    if disable is not None:
        env["AVNBENCH_DISABLE_PLUGINS"] = disable
    return subprocess.run([sys.executable, "-m", "avnbench.cli", *args], capture_output=True, encoding="utf-8",
                          env=env, cwd=root, timeout=120)


BOTH = "method 'threshold-baseline' is registered by both avnbench-impostor 0.1 (entry point 'impostor') and avnbench-threshold-baseline"
RUN = ["run", "--method", "threshold-baseline", "--preset", "smoke", "--data", "no-such-dataset", "--workdir", "work"]

# (fakes installed, AVNBENCH_DISABLE_PLUGINS, command, expected stderr fragment, exit code,
#  whether threshold-baseline is listed by `methods`)
ROWS = {
    "impostor-refused": (["impostor"], None, ["methods"], BOTH, 0, False),
    "impostor-one-line-with-the-way-out": (
        ["impostor"], None, ["methods"],
        "neither is used: disable one with AVNBENCH_DISABLE_PLUGINS=avnbench-impostor or "
        "AVNBENCH_DISABLE_PLUGINS=avnbench-threshold-baseline", 0, False),
    "impostor-run-refused": (["impostor"], None, RUN, f"error: {BOTH}", 2, None),
    "impostor-show-refused": (["impostor"], None, ["methods", "show", "threshold-baseline"], BOTH, 2, None),
    "same-entry-point-name": (
        ["same-entry-point"], None, ["methods"],
        "registered by both avnbench-lookalike 0.1 (entry point 'threshold_baseline') and "
        "avnbench-threshold-baseline 0.1.0 (entry point 'threshold_baseline')", 0, False),
    "disable-by-distribution": (
        ["impostor"], "avnbench-impostor", ["methods"],
        "disabled by AVNBENCH_DISABLE_PLUGINS: plugin avnbench-impostor 0.1 (entry point 'impostor')", 0, True),
    "disable-by-distribution-any-spelling": (
        ["impostor"], "Avnbench_Impostor", ["methods"], "disabled by AVNBENCH_DISABLE_PLUGINS: plugin avnbench-impostor", 0, True),
    "disable-by-entry-point": (
        ["impostor"], "impostor", ["methods"], "disabled by AVNBENCH_DISABLE_PLUGINS: plugin avnbench-impostor", 0, True),
    "disable-by-method": (
        ["impostor"], "threshold-baseline", ["methods"],
        "disabled by AVNBENCH_DISABLE_PLUGINS: method 'threshold-baseline'", 0, False),
    "run-disabled-method": (
        [], "threshold-baseline", RUN, "error: method 'threshold-baseline' is disabled by AVNBENCH_DISABLE_PLUGINS", 2, None),
    "run-method-of-a-disabled-plugin": (
        [], "avnbench-threshold-baseline", RUN,
        "unknown method 'threshold-baseline'. Available: ", 2, None),
    "unknown-disable-name": (
        [], "nosuchplugin, impostor", ["methods"],
        "warning: AVNBENCH_DISABLE_PLUGINS names 'nosuchplugin', which matches no plugin distribution, entry point or method",
        0, True),
    "sys-exit-at-import": (
        ["exits"], None, ["methods"], "avnbench-exiter 0.1 (entry point 'exiter') failed to load: it called sys.exit(3)", 0, True),
    "raises-at-import": (
        ["raises"], None, ["methods"],
        "avnbench-raiser 0.1 (entry point 'raiser') failed to load: ImportError: broken on purpose", 0, True),
    "raises-in-hook": (
        ["hook-raises"], None, ["methods"],
        "avnbench-hookraiser 0.1 (entry point 'hookraiser') failed to load: RuntimeError: hook boom", 0, True),
    "sys-exit-at-import-run-goes-on": (
        ["exits"], None, RUN, "failed to load: it called sys.exit(3); running the others", 2, None),
}


@pytest.fixture(scope="module")
def other_methods() -> list[str]:
    """The installed methods besides the baseline: a plugin problem must never hide them."""
    return [n for n in load_registry().names() if n != "threshold-baseline"]


@pytest.mark.parametrize("fakes, disable, args, fragment, code, baseline_listed", ROWS.values(), ids=ROWS.keys())
def test_plugin_problems_through_the_cli(tmp_path, other_methods, fakes, disable, args, fragment, code, baseline_listed):
    for fake in fakes:
        _install_fake(tmp_path, fake)
    out = _avnbench(tmp_path, args, disable)
    assert out.returncode == code, out.stderr
    assert fragment in out.stderr  # unwrapped: one line whatever its length
    assert "Traceback" not in out.stderr
    if args == RUN:
        assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()  # failed before any work
    if baseline_listed is not None:
        for name in other_methods:
            assert name in out.stdout
        assert ("threshold-baseline" in out.stdout) is baseline_listed
        if baseline_listed:
            assert "avnbench-threshold-baseline" in out.stdout and "avnbench-impostor" not in out.stdout
