"""The project's local ZenML stack: default orchestrator and artifact store + MLflow (SQLite) tracking.

Idempotent, and it works against the local ZenML server too (`zenml login --local`), which keeps its own
stacks. A stack that already has an experiment tracker (a user's GPU stack, say) is left active as is.
"""

from __future__ import annotations

from typing import Any

from llm_trainer.paths import state_dir

STACK = "llm_trainer_local"
TRACKER = "llm_trainer_mlflow"


def mlflow_tracking_uri() -> str:
    state_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def ensure_stack() -> str:
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


def ensure_mlflow_experiment(name: str) -> None:
    """Create the experiment with its artifacts under the project state folder (MLflow's default for a
    SQLite store is ./mlruns in whatever directory the run starts from)."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    trackers = Client().active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER) or []
    uri = trackers[0].configuration.get("tracking_uri") if trackers else None
    if not uri or not uri.startswith("sqlite:///"):
        return
    import mlflow

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
