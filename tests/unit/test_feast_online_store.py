"""``FLYWHEEL_FEAST_ONLINE_STORE`` / ``FLYWHEEL_FEAST_PROJECT``: the repo's online store and
project replaced by configuration, the rest of ``feature_store.yaml`` kept."""

from __future__ import annotations

import pytest

from mlflywheel.services.errors import ConfigError
from mlflywheel.services.features import load_store, online_store_config
from mlflywheel.services.settings import Workspace

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
    ("redis://cache", "cache:6379,db=0"),
    ("redis://cache:6380/7", "cache:6380,db=7"),
    ("redis://:s%40cret@cache:6379/2", "cache:6379,db=2,password=s@cret"),
    ("redis://app:pw@cache/3", "cache:6379,db=3,username=app,password=pw"),
    ("rediss://cache:6380/1", "cache:6380,db=1,ssl=true"),
])
def test_redis_url_becomes_feast_connection_string(url, expected):
    assert online_store_config(url) == {"type": "redis", "connection_string": expected}


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:6379", "expected redis://"),
    ("postgresql://db/feast", "expected redis://"),
    ("redis://cache:6379/zero", "must be a number, found 'zero'"),
    ("redis://:a,b@cache/0", "password with a comma"),
])
def test_bad_online_store_url_names_the_variable(url, message):
    with pytest.raises(ConfigError, match=f"FLYWHEEL_FEAST_ONLINE_STORE.*{message}"):
        online_store_config(url)


def test_env_overrides_online_store_and_project_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    default = load_store(Workspace.from_env()).config
    assert default.online_store.type == "sqlite" and default.project == "flywheel"
    monkeypatch.setenv("FLYWHEEL_FEAST_ONLINE_STORE", "redis://cache:6380/4")
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", "staging")
    config = load_store(Workspace.from_env()).config
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "cache:6380,db=4"
    assert config.project == "staging"
    assert config.registry.path == default.registry.path
    assert config.offline_store.type == default.offline_store.type
