"""`models push N --repo user/name`: a registered version's adapter, tokenizer and model card on the Hub.

The token comes from HF_TOKEN or the `hf auth login` cache; a missing token or a Hub that cannot be reached is
one line.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from llm_trainer.model_card import card_from_config, write_model_card
from runner.models import _adapter_of, data_fingerprint, find_version, stage_of

SKIPPED = {"llm_trainer_adapter.json"}  # the project's own pointer to a local base-model path


def push_version(cfg: RunConfig, name: str, number: int, repo: str, private: bool = False) -> str:
    from huggingface_hub import HfApi, get_token

    token = get_token()  # HF_TOKEN, else the `hf auth login` cache
    if not token:
        raise UserError("models push: no Hub token; run `hf auth login` or set HF_TOKEN (a token with write access)")
    version = find_version(name, str(number), what="models push")
    adapter = _adapter_of(version)
    metadata = version.run_metadata or {}
    stage = stage_of(version)
    info = card_from_config(cfg, metrics=dict(metadata.get("evaluation_metrics") or {}),
                            base_metrics=dict(metadata.get("base_model_metrics") or {}),
                            training=_training_figures(version),
                            data_fingerprint=data_fingerprint(version),
                            version=f"{name} {version.number}" + (f" ({stage})" if stage else ""))
    with tempfile.TemporaryDirectory(prefix="push-") as staging:
        folder = Path(staging) / "adapter"
        shutil.copytree(adapter.path, folder, ignore=lambda _, names: [n for n in names if n in SKIPPED])
        write_model_card(folder, info)
        api = HfApi(token=token)
        try:
            api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                       commit_message=f"{name} version {version.number}")
        except Exception as exc:  # httpx/requests errors, HfHubHTTPError: one line, not a traceback
            raise UserError(f"models push: the Hub refused or could not be reached ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from exc
    url = getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo}"
    return f"model '{name}' version {version.number} pushed to {repo}{' (private)' if private else ''}: {url}"


def _training_figures(version: Any) -> dict[str, Any]:
    """The train step's figures (wall time, steps, tokens, peak memory), from the step that made the adapter."""
    try:
        from zenml.client import Client

        artifact = version.get_artifact("adapter")
        step = Client().get_run_step(artifact.producer_step_run_id)
        return {k: v for k, v in (step.run_metadata or {}).items() if isinstance(v, int | float)}
    except Exception:  # an adapter linked by hand has no producing step: the card says less
        return {}
