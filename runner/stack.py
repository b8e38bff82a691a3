"""The project's local ZenML stack: default orchestrator and artifact store + MLflow (SQLite) tracking.

Idempotent, and it works against the local ZenML server too (`zenml login --local`), which keeps its own
stacks. A stack that already has an experiment tracker (a user's GPU stack, say) is left active as is.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llm_trainer.paths import state_dir

STACK = "llm_trainer_local"
TRACKER = "llm_trainer_mlflow"


def mlflow_tracking_uri() -> str:
    state_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


@contextmanager
def project_lock(name: str) -> Iterator[None]:
    """An exclusive lock file in the state folder: concurrent runs set shared things up one at a time."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_stack() -> str:
    with project_lock("stack"):
        return _ensure_stack()


def use_stack(name: str) -> None:
    """Run this process on a registered stack (``zenml.stack``) without changing the project's active one."""
    import os

    from zenml.client import Client

    from llm_trainer.errors import UserError

    try:
        stack = Client().get_stack(name, allow_name_prefix_match=False)
    except KeyError as exc:
        raise UserError(f"zenml.stack: no ZenML stack named '{name}'; register it first (see configs/stacks/)"
                        ) from exc
    os.environ["ZENML_ACTIVE_STACK_ID"] = str(stack.id)


def init_store() -> None:
    """Create (migrate) the local ZenML store once, before runs that start together race to do it; then mark
    the runs whose process died (killed, out of memory) as failed, in ZenML and MLflow."""
    with project_lock("zenml-store"):
        from zenml.client import Client

        Client().active_stack_model  # noqa: B018 - touching the store initialises it
    from runner.stale import fail_stale_runs

    fail_stale_runs(mlflow_sqlite_uri())


def _ensure_stack() -> str:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    if client.active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER):
        return client.active_stack_model.name
    existing = {c.name for c in client.list_stack_components(type=StackComponentType.EXPERIMENT_TRACKER, size=1000)}
    if TRACKER not in existing:
        client.create_stack_component(TRACKER, flavor="mlflow", component_type=StackComponentType.EXPERIMENT_TRACKER,
                                      configuration={"tracking_uri": mlflow_tracking_uri()})
    if STACK not in {s.name for s in client.list_stacks(size=1000)}:
        client.create_stack(STACK, components={StackComponentType.ORCHESTRATOR: "default",
                                               StackComponentType.ARTIFACT_STORE: "default",
                                               StackComponentType.EXPERIMENT_TRACKER: TRACKER})
    client.activate_stack(STACK)
    return STACK


def runs_in_this_process() -> bool:
    """Whether the active stack's orchestrator runs the steps in this process (ZenML's local one)."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    orchestrators = Client().active_stack_model.components.get(StackComponentType.ORCHESTRATOR) or []
    return bool(orchestrators) and orchestrators[0].flavor_name == "local"


def mlflow_sqlite_uri() -> str | None:
    """The tracking URI of the active stack's MLflow tracker when it is a local SQLite file, else None."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    trackers = Client().active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER) or []
    uri = trackers[0].configuration.get("tracking_uri") if trackers else None
    return uri if uri and uri.startswith("sqlite:///") else None


def ensure_mlflow_experiment(name: str) -> None:
    """Create the experiment with its artifacts under the project state folder (MLflow's default for a
    SQLite store is ./mlruns in whatever directory the run starts from)."""
    uri = mlflow_sqlite_uri()
    if uri is None:
        return
    import mlflow

    # Two runs starting at once would both create (migrate) the SQLite schema and the experiment; the
    # second would fail. One at a time, and only the first does the work.
    with project_lock("mlflow"):
        client = mlflow.MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name, artifact_location=(state_dir() / "mlflow-artifacts" / name).as_uri())


def describe_stack() -> dict[str, Any]:
    from zenml.client import Client

    stack = Client().active_stack_model
    components = {}
    for kind, models in stack.components.items():
        for model in models:
            components[str(kind.value)] = {"name": model.name, "flavor": model.flavor_name,
                                           **{k: str(v) for k, v in model.configuration.items() if v is not None}}
    return {"stack": stack.name, "components": components}
