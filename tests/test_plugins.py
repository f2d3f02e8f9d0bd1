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


def test_duplicate_names_name_both_plugins():
    registry = load_registry((_GoodPlugin(), _DuplicatePlugin()), use_entry_points=False)
    assert "good" in registry.failures["duplicate"] and "duplicate" in registry.failures["duplicate"]


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
