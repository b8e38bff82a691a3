"""The project's two dashboards, on loopback, in the foreground (Ctrl-C stops them).

    python -m runner.dashboards zenml  [--port 8237]   # ZenML server + dashboard on the project's store
    python -m runner.dashboards mlflow [--port 5000]   # MLflow UI on the project's SQLite store

`zenml login --local --blocking` serves the same SQLite store the pipelines write to and leaves the client
configuration as it is, so runs keep working after the dashboard stops. ``make dashboard`` and
``make mlflow-ui`` call this.
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


def environment() -> dict[str, str]:
    return {**os.environ, "ZENML_CONFIG_PATH": os.environ.get("ZENML_CONFIG_PATH", str(state_dir() / "zenml")),
            "ZENML_ANALYTICS_OPT_IN": "false"}


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["zenml", "mlflow"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    state_dir().mkdir(parents=True, exist_ok=True)
    if args.which == "zenml":
        command = zenml_command(args.port or 8237)
        print(f"ZenML dashboard: http://{HOST}:{args.port or 8237} (Ctrl-C stops it)", flush=True)
    else:
        command = mlflow_command(args.port or 5000)
        print(f"MLflow UI: http://{HOST}:{args.port or 5000} (Ctrl-C stops it)", flush=True)
    os.execvpe(command[0], command, environment())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
