"""The Airflow and MLflow UIs in a real browser against a ``flywheel up`` stack.

Debian's Chromium driven by Playwright (never ``playwright install``): log into Airflow, open
``fraud__train``, trigger it from the trigger form (training window, note), wait for the run
to succeed under the real scheduler, open the ``train`` task instance, follow its "MLflow run"
extra link and check that the MLflow page shows that run. Screenshots of each step go to
``test-artifacts/ui/``.

The stack runs with ``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False``: unpausing the DAG on
trigger would otherwise also start the nightly run first (``catchup=False`` still runs the
latest interval), and the manual run would queue behind it (``max_active_runs=1``).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest

from tests.integration.local_stack import running_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "ui"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTE = "ui test: trigger form"
WINDOW = 21


@pytest.fixture
def shots():
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    taken: list[Path] = []

    def shot(page, name: str) -> None:
        path = SHOTS / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    shot.taken = taken
    return shot


@pytest.mark.timeout(3600)  # a whole training run under the real scheduler on a shared 2-core box
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)")
def test_trigger_from_the_ui_and_follow_the_mlflow_link(tmp_path, shots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    with running_stack(tmp_path / "home", {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}) as st, \
            sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        browser.set_default_timeout(60_000)
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()

            # 1. log in (simple auth manager; the generated admin password from the workspace)
            page.goto(f"{st.airflow}/")
            page.wait_for_url("**/auth/login**")  # the UI sends a visitor without a token to log in
            page.locator("input[name=username]").fill(st.user)
            page.locator("input[name=password]").fill(st.password)
            shots(page, "login")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{st.airflow}/", timeout=60_000)
            page.wait_for_load_state("networkidle")
            shots(page, "home")

            # 2. the DAG page
            page.goto(f"{st.airflow}/dags/fraud__train", wait_until="networkidle")
            expect(page.get_by_role("heading", name="fraud__train").first).to_be_visible()
            expect(page.get_by_text("feature_materialize").first).to_be_visible()
            shots(page, "dag")

            # 3. the trigger form: Params (training window, note); unpause on trigger stays ticked
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Training window (days)")).to_be_visible()
            window = dialog.locator("input[name=element_training_window_days]")
            window.fill(str(WINDOW))
            dialog.locator("[id=element_note]").click()
            page.keyboard.type(NOTE)
            shots(page, "trigger-form")
            dialog.get_by_role("button", name="Trigger").click()
            page.wait_for_url("**/dags/fraud__train/runs/**", timeout=60_000)
            run_id = urllib.parse.unquote(page.url.split("/runs/", 1)[1].split("/")[0].split("?")[0])
            assert run_id.startswith("manual__"), run_id
            shots(page, "run-triggered")

            # 4. the scheduler runs it for real; the conf is the form's
            token = st.token()
            dag = st.api("GET", "/dags/fraud__train", token=token)
            assert dag["is_paused"] is False
            run = st.wait_run("fraud__train", run_id, timeout=3000)
            assert run["conf"] == {"training_window_days": WINDOW, "note": NOTE}
            states = {ti["task_id"]: ti["state"] for ti in run["task_instances"]}
            assert {t: states[t] for t in ("validate", "feature_materialize", "train", "evaluate_gate")} == \
                dict.fromkeys(("validate", "feature_materialize", "train", "evaluate_gate"), "success"), states
            # no champion yet: deploy_canary skips itself, never a failure
            assert set(states.values()) <= {"success", "skipped"}, states
            quoted = urllib.parse.quote(run_id, safe="")
            train = st.api("GET", f"/dags/fraud__train/dagRuns/{quoted}/taskInstances/train/xcomEntries/"
                                  "return_value", token=token)["value"]
            train = train if isinstance(train, dict) else json.loads(train)
            mlflow_run_id = train["run_id"]

            page.goto(f"{st.airflow}/dags/fraud__train/runs/{quoted}", wait_until="networkidle")
            shots(page, "run-success")

            # 5. the train task instance; its extra links are under Details
            page.goto(f"{st.airflow}/dags/fraud__train/runs/{quoted}/tasks/train", wait_until="networkidle")
            page.get_by_role("link", name="Details", exact=True).click()
            page.wait_for_url("**/tasks/train/details")
            link = page.get_by_role("link", name="MLflow run", exact=True)
            expect(link.first).to_be_visible()
            shots(page, "train-task")
            href = link.first.get_attribute("href")
            assert href and href.startswith(st.mlflow), href
            try:  # the link opens a new tab (target=_blank) or this one
                with browser.expect_page(timeout=15_000) as opened:
                    link.first.click()
                mlflow_page = opened.value
            except PlaywrightTimeout:
                mlflow_page = page
            mlflow_page.wait_for_load_state("load")  # the MLflow UI keeps polling: "networkidle" may never come
            assert mlflow_page.url.startswith(st.mlflow), mlflow_page.url
            assert mlflow_run_id in mlflow_page.url
            # the MLflow page shows that run: its id, under the train task's run name
            expect(mlflow_page.get_by_text(mlflow_run_id).first).to_be_visible(timeout=60_000)
            expect(mlflow_page.get_by_text("train fraud/").first).to_be_visible()
            shots(mlflow_page, "mlflow-run")
        finally:
            browser.close()
    assert [p.name for p in shots.taken] == [
        "01-login.png", "02-home.png", "03-dag.png", "04-trigger-form.png", "05-run-triggered.png",
        "06-run-success.png", "07-train-task.png", "08-mlflow-run.png"]
