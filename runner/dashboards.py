"""The project's two dashboards, on loopback, in the foreground (Ctrl-C stops them).

    python -m runner.dashboards zenml  [--port 8237]   # ZenML server + dashboard on the project's store
    python -m runner.dashboards mlflow [--port 5000]   # MLflow UI on the project's SQLite store

`zenml login --local --blocking` serves the same SQLite store the pipelines write to and leaves the client
configuration as it is, so runs keep working after the dashboard stops. ``make dashboard`` and
``make mlflow-ui`` call this. Each prints where to look first: the latest run's DAG, the experiments' run lists
(in MLflow's model-training view; it opens in GenAI mode otherwise).

    python -m runner.dashboards cli model list        # any `zenml` command on the project's store (make zenml)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from llm_trainer.paths import state_dir

HOST = "127.0.0.1"


def zenml_command(port: int) -> list[str]:
    return [_tool("zenml"), "login", "--local", "--blocking", "--ip-address", HOST, "--port", str(port)]


def mlflow_command(port: int) -> list[str]:
    return [_tool("mlflow"), "ui", "--backend-store-uri", f"sqlite:///{state_dir() / 'mlflow.db'}",
            "--host", HOST, "--port", str(port), "--workers", "1"]


def skip_onboarding() -> None:
    """The dashboard asks the local default user for account details before it shows anything (its survey
    shows while ``email_opted_in`` is unset and ``finished_onboarding_survey`` is not in the user's metadata).
    Answered here, through ZenML's API: no e-mail, survey done."""
    from zenml.client import Client

    client = Client()
    user = client.active_user
    metadata = dict(user.user_metadata or {})
    if user.email_opted_in is None or not metadata.get("finished_onboarding_survey"):
        client.update_user(user.id, updated_email_opt_in=False if user.email_opted_in is None else None,
                           updated_metadata={**metadata, "finished_onboarding_survey": True})


def latest_run_url(base: str) -> str | None:
    """The latest pipeline run's page (its DAG) on the local dashboard."""
    from zenml.client import Client

    runs = Client().list_pipeline_runs(sort_by="desc:created", size=1, hydrate=True)
    if not runs.items:
        return None
    run = runs.items[0]
    return f"{base}/projects/{run.project.name}/runs/{run.id}"


def experiment_urls(base: str) -> list[tuple[str, str]]:
    """(experiment, URL of its run list in the model-training view) for each experiment with runs."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{state_dir() / 'mlflow.db'}")
    found = []
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        if client.search_runs([experiment.experiment_id], max_results=1):
            found.append((experiment.name, f"{base}/#/experiments/{experiment.experiment_id}/runs"
                                           "?workflowType=machine_learning"))
    return found


def environment() -> dict[str, str]:
    return {**os.environ, "ZENML_CONFIG_PATH": os.environ.get("ZENML_CONFIG_PATH", str(state_dir() / "zenml")),
            "ZENML_ANALYTICS_OPT_IN": "false"}


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["zenml", "mlflow", "cli"])
    parser.add_argument("--port", type=int)
    args, rest = parser.parse_known_args(argv)
    state_dir().mkdir(parents=True, exist_ok=True)
    os.environ.update(environment())
    if args.which == "cli":  # `make zenml ARGS="model list"`: the project's store, not the user's global one
        command = [_tool("zenml"), *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.which == "zenml":
        base = f"http://{HOST}:{args.port or 8237}"
        command = zenml_command(args.port or 8237)
        skip_onboarding()
        print(f"ZenML dashboard: {base} (Ctrl-C stops it)", flush=True)
        if (url := latest_run_url(base)) is not None:
            print(f"  latest run (its DAG): {url}", flush=True)
        print("  models: `run_pipeline.py models --config CONFIG` (the dashboard's Models page needs ZenML Pro)",
              flush=True)
    else:
        base = f"http://{HOST}:{args.port or 5000}"
        command = mlflow_command(args.port or 5000)
        print(f"MLflow UI: {base} (Ctrl-C stops it)", flush=True)
        for name, url in experiment_urls(base):
            print(f"  experiment {name}: {url}", flush=True)
    os.execvpe(command[0], command, environment())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
