"""The registered MLflow model's code (an MLflow "model from code" file, stored inside each logged model).

Not a step: ``publishing/mlflow_pyfunc.py`` logs it. MLflow runs this file when the model loads; the library
it imports travels with the model (``code_paths``), and so do the adapter and, for a local base such as the tiny
model, the base model folder (``artifacts``). ``predict`` takes a DataFrame (or dict) with a ``prompt`` column
(text) or a ``messages`` column (a chat: a list of {role, content}), one per row, and returns one answer per
row: greedy, batched, with the training run's system prompt put first when a row gives none.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

ROLES = {"system", "user", "assistant"}


class ChatModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from llm_trainer.config import ModelConfig
        from llm_trainer.inference import load_for_inference
        from llm_trainer.modeling import load_tokenizer

        settings = context.model_config
        adapter = context.artifacts["adapter"]
        base = context.artifacts.get("base_model") or settings["model"]["base_model"]
        # A bundled base is a plain folder here: it loads on a CPU when the trained one did (the tiny model).
        cfg = ModelConfig.model_validate({**settings["model"], "base_model": base,
                                          "allow_cpu": settings["model"]["allow_cpu"] or settings["base_is_tiny"]})
        self.tokenizer = load_tokenizer(adapter, cfg)
        self.model = load_for_inference(cfg, base, adapter)
        self.system_prompt = settings["system_prompt"]
        self.max_new_tokens, self.batch_size = int(settings["max_new_tokens"]), int(settings["batch_size"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        """(A DataFrame hint: MLflow infers nothing from it; the logged signature converts the input to one.)"""
        from llm_trainer.inference import generate_batch

        conversations = [self._conversation(row, index) for index, row in enumerate(_rows(model_input))]
        wanted = (params or {}).get("max_new_tokens") or self.max_new_tokens
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise _bad_input(f"params.max_new_tokens must be a positive integer (got {wanted!r})")
        if not conversations:
            return []
        return [g.text for g in generate_batch(self.model, self.tokenizer, conversations, wanted, self.batch_size)]

    def _conversation(self, row: dict[str, Any], index: int) -> list[dict[str, str]]:
        prompt, messages = row.get("prompt"), row.get("messages")
        if isinstance(prompt, str) and prompt.strip():
            conversation = [{"role": "user", "content": prompt.strip()}]
        elif messages is not None and not isinstance(messages, str) and len(messages):
            conversation = []
            for message in messages:
                if not isinstance(message, dict) or message.get("role") not in ROLES or \
                        not isinstance(message.get("content"), str):
                    raise _bad_input(f"row {index}: each message needs a role in {sorted(ROLES)} and text content")
                conversation.append({"role": message["role"], "content": message["content"]})
            if conversation[-1]["role"] != "user":
                raise _bad_input(f"row {index}: the last message must be the user's")
        else:
            raise _bad_input(f"row {index}: give a non-empty 'prompt' or 'messages'")
        if self.system_prompt and conversation[0]["role"] != "system":
            conversation.insert(0, {"role": "system", "content": self.system_prompt})
        return conversation


def _rows(model_input: Any) -> list[dict[str, Any]]:
    """One dict per row from a DataFrame, a dict of columns, a list of rows or prompts, or one prompt."""
    if isinstance(model_input, pd.DataFrame):
        frame = model_input.astype(object).where(model_input.notna(), None)
        return frame.to_dict(orient="records")
    if isinstance(model_input, str):
        return [{"prompt": model_input}]
    if isinstance(model_input, dict):
        return _rows(pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in model_input.items()}))
    if isinstance(model_input, list):
        return [item if isinstance(item, dict) else {"prompt": item} for item in model_input]
    raise _bad_input(f"expected a DataFrame or a dict with a 'prompt' or 'messages' column, got "
                     f"{type(model_input).__name__}")


def _bad_input(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # the scoring server answers 400


mlflow.models.set_model(ChatModel())
