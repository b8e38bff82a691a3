"""Screenshots of the monitoring views for README.md (docs/images/). Not part of the tests; nothing imports it.

It needs Debian's chromium (``apt-get install chromium``; playwright's own browser download is not used) and
playwright in a virtual environment of its own, not the project's ``.venv``:

    python3 -m venv /tmp/pw-venv && /tmp/pw-venv/bin/pip install playwright

Run the quickstart and then the DPO quickstart first, so the model has two versions, with one state folder:

    export LLM_TRAINER_HOME=/tmp/shots-home ZENML_ANALYTICS_OPT_IN=false
    .venv/bin/python run_pipeline.py --config configs/quickstart.yaml
    .venv/bin/python run_pipeline.py --config configs/dpo_quickstart.yaml
    /tmp/pw-venv/bin/python scripts/monitoring_screenshots.py [--out docs/images]

With the project's ``.venv`` it starts the ZenML dashboard, the MLflow UI and ``serve`` (the production version)
on free loopback ports, sends 16 chat requests (8 one at a time, 8 at once), takes the screenshots and stops what
it started; then it redraws ``models_compare.png`` with ``models compare --output``. The files:

- ``zenml_versions_comparison.png``: the latest run's ``register_model`` step, its ``versions_comparison`` output;
- ``zenml_run_dag.png``: the latest run's DAG;
- ``mlflow_system_metrics.png``: the quickstart experiment's latest run, its System metrics tab (``system/*``);
- ``serve_metrics.png``: ``GET /metrics`` of the server after the requests;
- ``models_compare.png``: ``models compare --output``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CHROMIUM = "/usr/bin/chromium"
CONFIG = "configs/quickstart.yaml"
VIEWPORT = {"width": 1400, "height": 900}

# Run by the project's Python: the latest pipeline run and the MLflow run of the quickstart's training.
IDS = """
import json, os
from runner.dashboards import environment
os.environ.update(environment())
import mlflow
from zenml.client import Client
from llm_trainer.paths import state_dir
run = Client().list_pipeline_runs(sort_by="desc:created", size=1, hydrate=True).items[0]
client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{state_dir() / 'mlflow.db'}")
experiment = client.get_experiment_by_name("quickstart")
runs = [r for r in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
        if "system/process_rss_mb" in r.data.metrics]
print(json.dumps({"zenml_run": f"/projects/{run.project.name}/runs/{run.id}", "zenml_run_name": run.name,
                  "mlflow_run": f"/#/experiments/{experiment.experiment_id}/runs/{runs[0].info.run_id}",
                  "mlflow_run_name": runs[0].info.run_name}))
"""

QUESTIONS = ["Which is larger, 3 or 8?", "Is 14 even or odd?", "What is the last word of 'red green blue'?",
             "What is 4 + 5?", "Which is larger, 9 or 2?", "Is 7 even or odd?",
             "What is the last word of 'one two three four'?", "What is 2 + 6?"]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """A project command in its own process group (so stop() ends it and its children), output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGINT to the process group (as Ctrl-C), SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until ``url`` answers; an error if the process ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process ended; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s; see {log}")


def chat(base: str, question: str) -> None:
    """One chat completion request to the server at ``base``."""
    body = json.dumps({"model": "quickstart", "max_tokens": 32,
                       "messages": [{"role": "user", "content": question}]}).encode()
    request = urllib.request.Request(f"{base}/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def save(page: Page, path: Path, clip: dict | None = None) -> None:
    """The page (or ``clip`` of it) as a PNG at ``path``, made smaller by pngquant where it helps."""
    page.screenshot(path=str(path), clip=clip)
    subprocess.run(["pngquant", "--force", "--skip-if-larger", "--quality", "80-98", "--output", str(path),
                    str(path)], check=False)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def zenml_views(page: Page, base: str, ids: dict, out: Path) -> None:
    """The run's DAG, then its ``versions_comparison`` artifact's Visualization tab."""
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1500})  # the DAG is tall: bigger when fitted
    page.goto(base + ids["zenml_run"])
    page.wait_for_timeout(8000)
    page.get_by_text("Run Insights", exact=True).locator("xpath=..").locator("button").first.click()  # collapse
    page.get_by_label("Fit view").click()
    page.wait_for_timeout(2000)
    save(page, out / "zenml_run_dag.png")
    page.set_viewport_size(VIEWPORT)
    page.wait_for_timeout(1000)
    page.get_by_label("Fit view").click()
    page.wait_for_timeout(2000)
    page.get_by_text("versions_comparison", exact=True).first.click()
    page.wait_for_timeout(3000)
    page.get_by_role("tab", name="Visualization").click()
    page.get_by_role("button", name="Load Preview").click()  # the dashboard asks before it renders HTML
    page.wait_for_timeout(5000)
    save(page, out / "zenml_versions_comparison.png", clip={"x": 0, "y": 0, "width": 1400, "height": 700})


def mlflow_view(page: Page, base: str, ids: dict, out: Path) -> None:
    """The MLflow run's System metrics tab in the model-training view."""
    page.goto(base + ids["mlflow_run"] + "/system-metrics?workflowType=machine_learning")
    page.wait_for_timeout(8000)
    page.locator("[data-component-id=\"mlflow.assistant.chat_panel.close\"]").click()  # the Assistant panel
    page.wait_for_timeout(3000)
    save(page, out / "mlflow_system_metrics.png")


def serve_view(page: Page, port: int, out: Path) -> None:
    """8 requests one at a time and 8 at once, then ``GET /metrics``."""
    base = f"http://127.0.0.1:{port}"
    for question in QUESTIONS:
        chat(base, question)
    threads = [threading.Thread(target=chat, args=(base, question)) for question in QUESTIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    page.goto(f"{base}/metrics")
    save(page, out / "serve_metrics.png")


def main() -> int:
    """Start the three servers, take the screenshots, stop them, redraw models_compare.png."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    out = Path(parser.parse_args().out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="screenshots-"))
    ids = json.loads(subprocess.run([PYTHON, "-c", IDS], cwd=ROOT, check=True, capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1])
    print(json.dumps(ids))
    ports = {"zenml": free_port(), "mlflow": free_port(), "serve": free_port()}
    processes = {
        "zenml": start(["-m", "runner.dashboards", "zenml", "--port", str(ports["zenml"])], logs / "zenml.log"),
        "mlflow": start(["-m", "runner.dashboards", "mlflow", "--port", str(ports["mlflow"])], logs / "mlflow.log"),
        "serve": start(["run_pipeline.py", "serve", "--config", CONFIG, "--model-version", "production",
                        "--port", str(ports["serve"])], logs / "serve.log")}
    try:
        urls = {"zenml": "/health", "mlflow": "/health", "serve": "/health"}
        for name, process in processes.items():
            wait_for(f"http://127.0.0.1:{ports[name]}{urls[name]}", process, logs / f"{name}.log")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            zenml_views(page, f"http://127.0.0.1:{ports['zenml']}", ids, out)
            mlflow_view(page, f"http://127.0.0.1:{ports['mlflow']}", ids, out)
            serve_view(page, ports["serve"], out)
            browser.close()
    finally:
        for process in processes.values():
            stop(process)
    compare = out / "models_compare.png"
    print(subprocess.run([PYTHON, "run_pipeline.py", "models", "--config", CONFIG, "compare", "--output",
                          str(compare)], cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
