"""The zenml and hardware sections: where and how the pipelines run, and the card a run is sized for."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator


from llm_trainer.config.base import Section


class StepResources(Section):
    """ZenML ResourceSettings for one step; the stack's orchestrator or step operator applies them."""

    cpu_count: float | None = Field(None, gt=0, description="CPUs the step asks for.")
    gpu_count: int | None = Field(None, ge=0, description="GPUs the step asks for.")
    memory: str | None = Field(None, pattern=r"^[0-9]+(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$",
                               description="Memory the step asks for, e.g. 32GB.")


class StepResourcesByStep(Section):
    """The resources asked for the two heavy steps: train and evaluate."""

    train: StepResources = Field(StepResources(), description="Resources of the train step.")
    evaluate: StepResources = Field(StepResources(), description="Resources of the evaluate steps (base and "
                                    "fine-tuned).")


class DockerConfig(Section):
    """ZenML DockerSettings for containerised stacks (ignored by the local orchestrator)."""

    parent_image: str | None = Field(None, description="Image the step images build on, e.g. a CUDA PyTorch image.")
    requirements: str | list[str] | None = Field("requirements-runtime.txt", description="A requirements file or a "
                                                 "list of pins installed in the image (default: the runtime pins "
                                                 "without torch, which the image has).")
    apt_packages: list[str] = Field([], description="Debian packages installed in the image.")
    environment: dict[str, str] = Field({}, description="Environment variables set in the image (no secrets: use "
                                        "zenml.secrets).")


class ZenMLConfig(Section):
    """Where and how the pipelines run. Stack components are registered with ZenML's own CLI (README)."""

    enable_cache: bool = Field(True, description="Reuse a step's output when its code and inputs are unchanged "
                               "(--no-cache turns it off for one run).")
    tags: list[str] = Field([], description="Tags on the pipeline runs and the registered model versions.")
    stack: str | None = Field(None, description="ZenML stack to run on; default: the project's local stack.")
    step_operator: str | None = Field(None, description="Step operator of the stack that runs the train and "
                                                        "evaluate steps (e.g. on a GPU machine).")
    resources: StepResourcesByStep = Field(StepResourcesByStep(), description="CPUs, GPUs and memory the train "
                                           "and evaluate steps ask of the stack.")
    docker: DockerConfig | None = Field(None, description="The image of a containerised stack; null: ZenML's "
                                        "default DockerSettings.")
    secrets: list[str] = Field([], description="ZenML secrets whose keys become environment variables in every "
                               "step, e.g. [hf] after `zenml secret create hf --HF_TOKEN=...` (the gated model "
                               "needs it); only the name is in the config, never the value.")
    run_config: str | None = Field(None, description="A ZenML run-configuration YAML (its own format: settings, "
                                   "steps.<name>.settings, steps.<name>.step_operator, schedule...) applied as it "
                                   "is; the options above win where both set the same key.")

    @field_validator("run_config")
    @classmethod
    def _run_config_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value


class HardwareEstimate(Section):
    """The card a run is sized for (configs/cards/), for the training-time estimate that ``process`` prints."""

    card: str | None = Field(None, description="The card's name in the estimate, e.g. '24 GB (A10G)'.")
    peak_tflops: float | None = Field(None, gt=0, description="The card's published dense bf16/fp16 tensor peak, "
                                      "TFLOP/s: with ``mfu``, the training rate of a model whose shape is known.")
    mfu: float = Field(0.25, gt=0, le=1, description="Assumed share of that peak QLoRA training reaches (HF "
                       "with gradient checkpointing: usually 0.20-0.35).")
    train_tokens_per_second: float | None = Field(None, gt=0, description="Measured training tokens/s per GPU on "
                                                  "this card: replaces the estimate from peak_tflops and mfu.")
