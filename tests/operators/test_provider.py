"""mlflywheel is an Airflow provider: listed, with its connection types, forms and extra links."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.operators


@pytest.fixture(scope="module")
def providers():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_the_provider_is_registered_with_its_version(providers):
    from mlflywheel import __version__

    assert providers.providers["mlflywheel"].version == __version__


@pytest.mark.parametrize("conn_type", ["mlflow", "feast", "modelserver"])
def test_each_connection_type_opens_its_hook_and_form(providers, conn_type):
    from mlflywheel_airflow.provider_info import FORMS, HOOKS

    path, name = HOOKS[conn_type]
    module, cls = path.rsplit(".", 1)
    hook = getattr(importlib.import_module(module), cls)
    assert hook.conn_type == conn_type and hook.hook_name == name
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManagerTaskRuntime().hooks[conn_type].hook_class_name == path  # what a task's hook lookup uses
    form = providers.field_behaviours[conn_type]
    assert form["hidden_fields"] == FORMS[conn_type]["hidden-fields"]
    assert form["placeholders"], conn_type


def test_the_extra_links_are_known_without_the_plugin(providers):
    from mlflywheel_airflow.provider_info import EXTRA_LINKS

    assert {f"mlflywheel_airflow.links.{n}" for n in EXTRA_LINKS} <= set(providers.extra_links_class_names)


def test_every_operator_module_is_declared():
    from pathlib import Path

    import mlflywheel_airflow.operators as ops
    from mlflywheel_airflow.provider_info import OPERATOR_MODULES

    on_disk = {p.stem for p in Path(ops.__file__).parent.glob("*.py")} - {"__init__", "base"}
    assert set(OPERATOR_MODULES) == on_disk


def test_airflow_providers_list_shows_it():
    result = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"package_name": "mlflywheel"' in result.stdout
