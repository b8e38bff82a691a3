"""Turn the config's `zenml:` section into ZenML run options: per-step resources and step operator,
docker settings, and a schedule. Pure functions of the config, so tests can check what reaches the
compiled pipeline without a remote stack."""

from __future__ import annotations

from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from steps.names import EVALUATE_BASE, EVALUATE_FINETUNED, TRAIN

# The steps that need the accelerator, per pipeline command.
GPU_STEPS = {
    "train": {TRAIN: "train"},
    "evaluate": {EVALUATE_BASE: "evaluate", EVALUATE_FINETUNED: "evaluate"},
    "full": {TRAIN: "train", EVALUATE_BASE: "evaluate", EVALUATE_FINETUNED: "evaluate"},
}


def step_options(cfg: RunConfig, command: str) -> dict[str, dict[str, Any]]:
    """``with_options(steps=...)``: the step operator and resources of the train and evaluate steps."""
    options: dict[str, dict[str, Any]] = {}
    for step_name, kind in GPU_STEPS.get(command, {}).items():
        step: dict[str, Any] = {}
        if cfg.zenml.step_operator:
            step["step_operator"] = cfg.zenml.step_operator
        resources = getattr(cfg.zenml.resources, kind).model_dump(exclude_none=True)
        if resources:
            step["settings"] = {"resources": resources}
        if step:
            options[step_name] = step
    return options


def pipeline_settings(cfg: RunConfig) -> dict[str, Any]:
    """Pipeline-level settings: docker (image for containerised orchestrators and step operators)."""
    if cfg.zenml.docker is None:
        return {}
    docker = cfg.zenml.docker.model_dump(exclude_none=True)
    docker.setdefault("requirements", None)
    return {"docker": {k: v for k, v in docker.items() if v not in (None, [], {})}}


def parse_schedule(cron: str, name: str) -> Any:
    """A ZenML Schedule from a five-field cron expression; one clear line when it is not one."""
    fields = cron.split()
    if len(fields) != 5 or not all(_cron_field_ok(f) for f in fields):
        raise UserError(f"--schedule {cron!r}: expected a cron expression of five fields, e.g. \"0 3 * * 1\" "
                        "(03:00 every Monday)")
    from zenml.config.schedule import Schedule

    return Schedule(name=name, cron_expression=" ".join(fields))


def _cron_field_ok(field: str) -> bool:
    allowed = set("0123456789*/,-") | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return bool(field) and set(field.upper()) <= allowed


def check_stack_supports(cfg: RunConfig, command: str, schedule: Any) -> None:
    """Fail before anything runs when the active stack cannot do what the config asks."""
    from zenml.client import Client

    stack = Client().active_stack
    if schedule is not None and not stack.orchestrator.config.is_schedulable:
        raise UserError(
            f"--schedule: the orchestrator '{stack.orchestrator.name}' ({stack.orchestrator.flavor}) of stack "
            f"'{stack.name}' cannot run schedules; use a stack whose orchestrator can (kubernetes, vertex, "
            "sagemaker, airflow, kubeflow...) via zenml.stack, see configs/stacks/")
    for name in cfg.zenml.secrets:
        try:
            Client().get_secret(name, allow_partial_name_match=False)
        except KeyError:
            raise UserError(f"zenml.secrets: there is no ZenML secret '{name}' in this store; create it with "
                            f"`zenml secret create {name} --HF_TOKEN=...` (its keys become environment variables "
                            "in the steps)") from None
    operator = cfg.zenml.step_operator
    if operator and GPU_STEPS.get(command) and operator not in stack.step_operators:
        have = ", ".join(sorted(stack.step_operators)) or "none"
        raise UserError(f"zenml.step_operator: '{operator}' is not in stack '{stack.name}' "
                        f"(its step operators: {have}); register it, see configs/stacks/")
