"""KServe: each deployment change as an InferenceService, written and applied.

No cluster runs here, so ``apply`` talks to ``FakeKubeApi``: a fake of the Kubernetes API
server (named as one) that records each server-side apply and answers like the real one.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mlflywheel.services import deployments, kserve, tracking
from mlflywheel.services.settings import Workspace
from tests import helpers

pytestmark = pytest.mark.unit


class FakeKubeApi:
    """A fake Kubernetes API server: records PATCH requests; ``status`` sets its answer."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        self.status = status
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                url = urlparse(self.path)
                fake.requests.append({"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers),
                                      "body": yaml.safe_load(body)})
                payload = json.dumps(fake.requests[-1]["body"] if fake.status < 300 else
                                     {"kind": "Status", "message": "forbidden"}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def registry(tmp_path, monkeypatch, ctr_onnx):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    v1, v2 = (helpers.publish_onnx_version(ws, ctr_onnx.config, ctr_onnx.files[v]) for v in ("1", "2"))
    client = tracking.client(ws)
    client.set_registered_model_alias(ctr_onnx.config.model_name, "champion", v1)
    return ws, ctr_onnx.config, client, v1, v2


def _with(config, mode):
    return config.model_copy(update={"rollout": config.rollout.model_copy(update={"kserve": mode,
                                                                                  "kserve_namespace": "ml"})})


def test_off_by_default_writes_nothing(registry):
    ws, config, client, _, v2 = registry
    deployments.set_canary(ws, config, client, v2, 20.0, "step 0")
    assert config.rollout.kserve == "off" and not (ws.reports_dir / config.name / "kserve").exists()


def test_every_change_applied_to_the_cluster_as_an_inference_service(registry, monkeypatch):
    ws, config, client, v1, v2 = registry
    config = _with(config, "apply")
    api = FakeKubeApi()
    monkeypatch.setenv("FLYWHEEL_K8S_API", api.url)
    monkeypatch.setenv("FLYWHEEL_K8S_TOKEN", "t0k")
    try:
        deployments.set_canary(ws, config, client, v2, 20.0, "step 0")
        deployments.set_canary(ws, config, client, v2, 50.0, "step 1")
        deployments.rollback(ws, config, client, "p99")
    finally:
        api.close()
    assert ([r["path"] for r in api.requests]
            == ["/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/ctr"] * 3)
    first = api.requests[0]
    assert first["query"] == {"fieldManager": ["mlflywheel"], "force": ["true"]}
    assert first["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert first["headers"]["Authorization"] == "Bearer t0k"
    predictors = [r["body"]["spec"]["predictor"] for r in api.requests]
    assert [p.get("canaryTrafficPercent") for p in predictors] == [20, 50, None]
    uri = client.get_model_version_download_uri
    assert predictors[0]["model"]["storageUri"] == f"{uri(config.model_name, v2)}/onnx"
    assert predictors[2]["model"]["storageUri"] == f"{uri(config.model_name, v1)}/onnx"  # back to the champion
    folder = ws.reports_dir / config.name / "kserve"
    assert sorted(p.name for p in folder.iterdir()) == ["ctr-00001.yaml", "ctr-00002.yaml", "ctr-00003.yaml",
                                                        "current.yaml"]
    assert yaml.safe_load((folder / "current.yaml").read_text()) == api.requests[2]["body"]


def test_a_refused_apply_is_an_error_after_the_ledger_line(registry, monkeypatch):
    ws, config, client, _, v2 = registry
    config = _with(config, "apply")
    api = FakeKubeApi(status=403)
    monkeypatch.setenv("FLYWHEEL_K8S_API", api.url)
    try:
        with pytest.raises(kserve.KServeApplyError, match="answered 403"):
            deployments.set_canary(ws, config, client, v2, 20.0, "step 0")
    finally:
        api.close()
    last = json.loads(deployments.ledger_path(ws, config).read_text().splitlines()[-1])
    assert (last["canary"], last["canary_weight"]) == (v2, 20.0)


def test_apply_without_an_api_says_how_to_configure_one(registry, monkeypatch):
    ws, config, client, _, v2 = registry
    for name in ("FLYWHEEL_K8S_API", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(kserve.KServeApplyError, match="set FLYWHEEL_K8S_API"):
        deployments.set_canary(ws, _with(config, "apply"), client, v2, 20.0, "step 0")
    manifests = _with(config, "manifests")
    deployments.set_canary(ws, manifests, client, v2, 50.0, "step 1")  # manifests only: no API needed
    current = yaml.safe_load((ws.reports_dir / config.name / "kserve" / "current.yaml").read_text())
    assert current["spec"]["predictor"]["canaryTrafficPercent"] == 50
