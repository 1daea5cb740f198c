"""The ``rollback`` stage: ``@champion`` back to ``@previous_champion`` (or a named version) in one step.

The manual path (the ``<pipeline>__rollback`` DAG and ``flywheel rollback``). The target must
exist and carry a published ONNX variant, or nothing moves; the change is recorded in the
deployment ledger like every other deployment change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace


def rollback(config: PipelineConfig, ws: Workspace, *, reason: str, to_version: str | None = None) -> dict[str, Any]:
    """Restore the previous champion (or ``to_version``); returns the ledger's ``deploy`` event.

    Raises:
        RegistryError: no previous champion, no such version, or a version without ONNX variant.
    """
    from mlflywheel.services import tracking
    from mlflywheel.services.deployments import restore_previous

    return restore_previous(ws, config, tracking.client(ws), reason, to_version=to_version)
