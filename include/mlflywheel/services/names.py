"""The names the pipeline shares with MLflow, the model server and the ONNX files: one home.

Aliases, run and model-version tag keys, ONNX metadata keys and the tag-length rule live here
so that a stage writing a tag and the server or a tool reading it cannot drift apart. Plain
constants, importable from anywhere (this module imports nothing of the package).
"""

from __future__ import annotations

# Registry aliases: who serves, who waits, who is rolling out, where a rollback returns to.
CHAMPION = "champion"
CHALLENGER = "challenger"
CANARY = "canary"
PREVIOUS_CHAMPION = "previous_champion"

# Run tags.
TAG_RUN_KEY = "flywheel.run_key"
TAG_PIPELINE = "flywheel.pipeline"
TAG_DIGEST = "flywheel.dataset_digest"
TAG_DECISION = "flywheel.gate.decision"
TAG_REASONS = "flywheel.gate.reasons"
TAG_TRIGGER = "flywheel.trigger"
TAG_NOTE = "flywheel.note"
TAG_MODEL_URI = "flywheel.model_uri"
TAG_MODEL_SHA256 = "flywheel.model_sha256"
TAG_GIT = "mlflow.source.git.commit"
TAG_CHECK = "flywheel.drift.check"
TAG_DRIFT_DECISION = "flywheel.drift.decision"
TAG_DRIFT_REASONS = "flywheel.drift.reasons"

# Model-version tags.
TAG_SERVE_VARIANT = "flywheel.serve_variant"
TAG_ONNX = "flywheel.onnx"
TAG_PROMOTED_BY = "flywheel.promoted_by"

# Registered-model tags the model server reads for routing (written by deploy_canary).
TAG_MODE = "flywheel.serving_mode"
TAG_CANARY_WEIGHT = "flywheel.canary_weight"
TAG_AB_WEIGHT = "flywheel.ab_weight"
TAG_SALT = "flywheel.routing_salt"

# Metadata keys inside an exported ONNX file.
META_CATEGORIES = "flywheel.categories"
META_FEATURES = "flywheel.features"
META_REWRITES = "flywheel.graph_rewrites"
PROBABILITIES = "probabilities"

# MLflow refuses tag values over 5,000 characters (model-version tags); long texts are cut
# a little below it so that a reason list never fails the write that records it.
TAG_VALUE_LIMIT = 4900


def tag_value(text: str) -> str:
    """``text`` cut to what MLflow accepts as a tag value."""
    return text[:TAG_VALUE_LIMIT]
