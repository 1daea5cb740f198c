"""PipelineConfig: the shipped configs load; every kind of bad YAML names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflywheel.services.config import load_pipeline, load_pipelines
from mlflywheel.services.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "include" / "pipelines"
pytestmark = pytest.mark.unit


def test_shipped_pipelines_load_with_distinct_datasets():
    configs = {c.name: c for c in load_pipelines(PIPELINES)}
    assert set(configs) == {"fraud", "ctr"}
    assert configs["fraud"].train_dag_id == "fraud__train"
    assert configs["fraud"].drift_asset_uri == "flywheel://fraud/drift"
    assert configs["fraud"].data.entity != configs["ctr"].data.entity
    assert configs["fraud"].data.label != configs["ctr"].data.label
    assert configs["fraud"].model_name == "fraud_detector"
    assert configs["ctr"].model_name == "ctr"
    assert configs["fraud"].feature_columns[:3] == ["merchant_category", "channel", "country"]


def _write(tmp_path: Path, raw: dict, name: str = "fraud") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((PIPELINES / "fraud.yaml").read_text())


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r.update(colour="blue"), "key 'colour': unknown key"),
    (lambda r: r["training"].update(learning_rate=0.1), "key 'training.learning_rate': unknown key"),
    (lambda r: r["training"].update(window_days="four weeks"), "key 'training.window_days'"),
    (lambda r: r["data"].pop("label"), "key 'data.label': required key is missing"),
    (lambda r: r["gate"].update(thresholds={}), "no thresholds configured"),
    (lambda r: r["gate"]["thresholds"].update(auc={"min": 0.5}), "unknown metric(s) ['auc']"),
    (lambda r: r["gate"]["thresholds"].update(roc_auc={}), "give at least one of min or max"),
    (lambda r: r["gate"].pop("fairness"), "key 'gate.fairness': required key is missing"),
    (lambda r: r.update(tags=["yolo"]), "not in the approved set"),
    (lambda r: r["training"].update(holdout_days=40), "holdout_days (40) must be smaller than window_days"),
    (lambda r: r["training"]["numeric"].append("mystery"), "['mystery'] are neither request features"),
    (lambda r: r["training"]["numeric"].append("is_fraud"), "training inputs ['is_fraud']"),
    (lambda r: r["schedule"].update(cron="every night"), "5-field cron"),
])
def test_bad_config_names_file_and_key(tmp_path, raw, mutate, expected):
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "fraud.yaml"
    path.write_text("name: fraud\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(path)


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "fraud.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, found list"):
        load_pipeline(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="pipeline config not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_name_must_match_file(tmp_path, raw):
    path = _write(tmp_path, raw, name="other")
    with pytest.raises(ConfigError, match="key 'name' is 'fraud' but the file is named 'other'"):
        load_pipeline(path)


def test_the_project_root_without_the_environment_is_the_checkout(monkeypatch):
    """What `flywheel` and the image use when FLYWHEEL_PROJECT_ROOT is not set (make and the tests set it)."""
    from mlflywheel.services.settings import project_root

    monkeypatch.delenv("FLYWHEEL_PROJECT_ROOT", raising=False)
    assert project_root() == Path(__file__).resolve().parents[2]
    assert (project_root() / "include" / "pipelines" / "fraud.yaml").is_file()
