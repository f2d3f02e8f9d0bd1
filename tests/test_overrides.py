"""Config overrides (--set, --config, shortcuts): parsing, validation and their effect on a run."""

import json

import pytest

from avnbench.errors import ConfigError
from avnbench.overrides import Overrides, load_config_file, parse_set, resolve_config
from avnbench.plugins import load_registry
from avnbench.runner import plan_fold_jobs, run_benchmark


@pytest.fixture(scope="module")
def baseline_config():
    return load_registry().get("threshold-baseline").cls.Config


def test_set_parses_yaml_values_shared_and_scoped():
    o = parse_set(["sigma_mm=0.8", "dynunet.patch_size=[16, 32, 32]", "threshold-baseline.opening_mm=null", "flag=true"])
    assert o.shared == {"sigma_mm": 0.8, "flag": True}
    assert o.scoped == {"dynunet": {"patch_size": [16, 32, 32]}, "threshold-baseline": {"opening_mm": None}}


@pytest.mark.parametrize(
    "items, fragment",
    [
        (["sigma_mm"], "write FIELD=VALUE"),
        (["=1"], "write FIELD=VALUE"),
        ([".x=1"], "write METHOD.FIELD=VALUE"),
    ],
)
def test_malformed_set_is_one_line(items, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_set(items)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (Overrides(shared={"no_such": 1}), "no method of this command has a config field 'no_such'. Allowed: "),
        (Overrides(scoped={"threshold-baseline": {"no_such": 1}}), "has no config field 'no_such'. Allowed: "),
        (Overrides(scoped={"dynunet": {"epochs": 1}}), "which this command does not run"),
    ],
)
def test_overrides_are_checked_against_the_methods_run(overrides, fragment, baseline_config):
    with pytest.raises(ConfigError, match=fragment):
        overrides.check_against({"threshold-baseline": baseline_config})


def test_a_bad_value_names_the_field(baseline_config):
    with pytest.raises(ConfigError, match="config field 'sigma_mm'"):
        resolve_config("threshold-baseline", baseline_config, "smoke", 0, {"sigma_mm": "abc"})


def test_config_file_sections_are_scoped_by_method_name(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("cpu_threads: 1\nthreshold-baseline:\n  sigma_mm: 0.9\n", encoding="utf-8")
    o = load_config_file(path, ["threshold-baseline", "dynunet"])
    assert o.shared == {"cpu_threads": 1} and o.scoped == {"threshold-baseline": {"sigma_mm": 0.9}}
    (tmp_path / "o.json").write_text(json.dumps({"threshold-baseline": {"sigma_mm": 0.7}}), encoding="utf-8")
    assert load_config_file(tmp_path / "o.json", ["threshold-baseline"]).scoped["threshold-baseline"] == {"sigma_mm": 0.7}
    (tmp_path / "bad.yaml").write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML or JSON"):
        load_config_file(tmp_path / "bad.yaml", [])


def test_an_override_changes_the_config_and_the_run_key(tiny_dataset, tmp_path):
    plain = plan_fold_jobs("threshold-baseline", tiny_dataset.root, tmp_path, "smoke", [0], "cpu")
    changed = plan_fold_jobs("threshold-baseline", tiny_dataset.root, tmp_path, "smoke", [0], "cpu",
                             config_overrides={"sigma_mm": 0.9})
    assert changed.config["sigma_mm"] == 0.9 and plain.config["sigma_mm"] != 0.9
    assert changed.run_key != plain.run_key


def test_the_run_records_the_override_in_its_params(tiny_dataset, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = run_benchmark("threshold-baseline", tiny_dataset.root, tmp_path / "w", preset="smoke", folds=[0],
                           device="cpu", tracking_uri=uri, n_bootstrap=0, config_overrides={"sigma_mm": 0.9})
    params = MlflowClient(uri).get_run(result.parent_run_id).data.params
    assert any(k.endswith("sigma_mm") and v == "0.9" for k, v in params.items()), params
