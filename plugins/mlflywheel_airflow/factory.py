"""The DAG factory: one DAG per pipeline YAML, and a bad YAML shown as an import error of its own.

``dags/flywheel_*.py`` call :func:`pipeline_dags` with a builder. Each file in
``include/pipelines/`` is loaded on its own: a file that fails to load does not hide the other
pipelines' DAGs. It becomes one placeholder DAG whose ``validate()`` raises the file's error,
so Airflow's DagBag records an import error for the DAG file naming the YAML, the key, what
was expected and what was found (the "Import errors" list in the UI), and bags the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from airflow.sdk import DAG

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig


class InvalidPipelines(DAG):
    """Stands for the pipeline YAMLs that did not load; Airflow never schedules it."""

    def validate(self) -> None:
        from mlflywheel.services.errors import ConfigError

        raise ConfigError(self.description or "a pipeline YAML did not load")


def pipeline_dags(kind: str, build: Callable[[PipelineConfig], DAG | None]) -> dict[str, DAG]:
    """``{dag_id: dag}`` for every pipeline YAML, plus ``invalid_pipelines__<kind>`` when one is broken.

    Args:
        kind: the DAG family (``train``, ``batch``, ``drift``, ``rollback``), for the placeholder's id.
        build: the builder of one DAG from one pipeline config (``None``: this pipeline has no such DAG).

    Raises:
        ConfigError: the pipelines folder itself is missing (nothing can be built).
    """
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.errors import ConfigError
    from mlflywheel.services.settings import Workspace

    folder = Workspace.from_env().pipelines_dir
    if not folder.is_dir():
        raise ConfigError(f"{folder}: pipelines folder not found")
    dags: dict[str, DAG] = {}
    broken: list[str] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            config = load_pipeline(path)
        except ConfigError as exc:
            broken.append(str(exc))
            continue
        dag = build(config)
        if dag is not None:
            dags[dag.dag_id] = dag
    if broken:
        dag_id = f"invalid_pipelines__{kind}"
        dags[dag_id] = InvalidPipelines(dag_id=dag_id, schedule=None,
                                        description=f"{len(broken)} pipeline YAML(s) did not load:\n"
                                                    + "\n".join(broken))
    return dags
