"""The base of every config section: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


TINY_MODEL_NAME = "tiny-llama"


class Section(BaseModel):
    """Base of every config model: an unknown key is an error, and an assignment is validated like the YAML."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
