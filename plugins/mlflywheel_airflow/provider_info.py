"""mlflywheel as an Airflow provider: what ``airflow providers list`` and the connection forms show.

Registered through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. Airflow's
ProvidersManager reads this dict (checked against its provider-info schema): the connection
types below get their own entry, with the hooks' field labels and placeholders, in the UI's
connection form, and the extra links are known to the API server without the plugin.
"""

from __future__ import annotations

from typing import Any

HOOKS = {
    "mlflow": ("mlflywheel_airflow.hooks.mlflow.MlflowHook", "MLflow (mlflywheel)"),
    "feast": ("mlflywheel_airflow.hooks.feast.FeastHook", "Feast repo (mlflywheel)"),
    "modelserver": ("mlflywheel_airflow.hooks.model_server.ModelServerHook", "Model server (mlflywheel)"),
}
#: The connection forms (Airflow's declarative ``ui-field-behaviour``): what each hook reads.
FORMS: dict[str, dict[str, Any]] = {
    "mlflow": {"hidden-fields": ["login", "password"],
               "relabeling": {"host": "Tracking server", "extra": "Extra (ui_url: where people open the UI)"},
               "placeholders": {"host": "http://mlflow", "port": "5000", "extra": '{"ui_url": "http://mlflow:5000"}'}},
    "feast": {"hidden-fields": ["host", "schema", "port", "login", "password"],
              "relabeling": {"extra": "Extra (repo_path: the folder with feature_store.yaml)"},
              "placeholders": {"extra": '{"repo_path": "/opt/feature_repo"}'}},
    "modelserver": {"hidden-fields": ["login", "password", "extra"],
                    "relabeling": {"schema": "Scheme"},
                    "placeholders": {"host": "model-server", "port": "8000", "schema": "http"}},
}
OPERATOR_MODULES = ["validate", "feature_materialize", "train", "evaluate_gate", "register", "export_quantize",
                    "benchmark", "deploy_canary", "batch_score", "drift_check", "emit_trigger", "rollback", "infer"]
EXTRA_LINKS = ["MlflowRunLink", "MlflowModelVersionLink", "DriftReportLink", "ValidationResultLink",
               "BenchmarkChartLink"]


def get_provider_info() -> dict[str, Any]:
    """The provider's metadata (Airflow's ``provider_info.schema.json`` form)."""
    from mlflywheel import __version__

    return {
        "package-name": "mlflywheel",
        "name": "mlflywheel",
        "description": "Airflow-native MLOps pipelines: validate, features, train, gate, register, export, "
                       "benchmark, deploy, batch score, watch drift.",
        "versions": [__version__],
        "integrations": [{"integration-name": "mlflywheel", "external-doc-url": "https://github.com/mlflywheel",
                          "tags": ["software"]}],
        "operators": [{"integration-name": "mlflywheel",
                       "python-modules": [f"mlflywheel_airflow.operators.{m}" for m in OPERATOR_MODULES]}],
        "hooks": [{"integration-name": "mlflywheel",
                   "python-modules": [path.rsplit(".", 1)[0] for path, _ in HOOKS.values()]}],
        "triggers": [{"integration-name": "mlflywheel",
                      "python-modules": ["mlflywheel_airflow.triggers.deploy_canary"]}],
        "connection-types": [{"connection-type": conn_type, "hook-class-name": path, "hook-name": name,
                              "ui-field-behaviour": FORMS[conn_type]}
                             for conn_type, (path, name) in HOOKS.items()],
        "extra-links": [f"mlflywheel_airflow.links.{name}" for name in EXTRA_LINKS],
        "plugins": [{"name": "mlflywheel", "plugin-class": "mlflywheel_airflow.plugin.FlywheelPlugin"}],
    }
