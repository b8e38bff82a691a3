"""Before a pipeline starts: can the models it loads be had, from a local folder, the Hugging Face cache or the
Hub? One HEAD request per model, so an unreachable or gated Hub costs seconds and one line, not a minute of
loading and preprocessing and a screen of retries in the tokenize step. ``hub_failure`` turns a Hub error
raised anywhere later into one line too."""

from __future__ import annotations

import os
from pathlib import Path

from llm_trainer.config import TINY_MODEL_NAME, RunConfig
from llm_trainer.errors import ConfigError, exception_chain, one_line

TIMEOUT_SECONDS = 10
PROBE_FILES = ("config.json", "tokenizer_config.json")  # either: a model, or a tokenizer-only repository


def check_models(cfg: RunConfig) -> None:
    """The base model, and the LLM judge if there is one, each present locally or reachable on the Hub."""
    # A token from ZenML secrets reaches the steps only: access to a gated model cannot be judged from here.
    token_in_steps = bool(getattr(cfg.zenml, "secrets", None))
    check_model("model.base_model", cfg.model.base_model, cfg.model.revision, token_in_steps)
    judge = cfg.evaluation.judge
    if judge is not None:
        check_model("evaluation.judge.model", judge.model, judge.revision, token_in_steps)


def check_model(key: str, name: str, revision: str | None, token_in_steps: bool = False) -> None:
    """Refuse in one line a model that is neither local, cached nor reachable on the Hub."""
    if name == TINY_MODEL_NAME or Path(name).expanduser().exists() or _in_cache(name, revision):
        return
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ConfigError(f"{key}: cannot load '{name}': it is not in the Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}) and the Hub is off (HF_HUB_OFFLINE=1); download it first "
                          f"(huggingface-cli download {name}) or unset HF_HUB_OFFLINE")
    try:
        get_hf_file_metadata(hf_hub_url(name, PROBE_FILES[0], revision=revision), timeout=TIMEOUT_SECONDS)
    except RemoteEntryNotFoundError:
        return  # the repository is there, without a config.json (a tokenizer-only repository)
    except Exception as exc:
        if token_in_steps and isinstance(exc, RepositoryNotFoundError):
            return  # gated, private or absent: a token that only the steps get may open it
        raise ConfigError(f"{key}: cannot load '{name}': {hub_failure(exc) or one_line(exc)}") from exc


def hub_failure(exc: BaseException) -> str | None:
    """One line for an exception that a Hub request caused (whatever wraps it), else None."""
    from huggingface_hub import constants

    for error in exception_chain(exc):
        name = type(error).__name__
        if name == "GatedRepoError":
            return ("it is gated on the Hub: accept its licence on its Hub page, then log in (huggingface-cli "
                    "login, or set HF_TOKEN)")
        if name == "RepositoryNotFoundError":
            return "there is no such model on the Hub (or it is private and you are not logged in)"
        if name == "RevisionNotFoundError":
            return f"the Hub has no such revision ({one_line(error)})"
        if name == "OfflineModeIsEnabled":
            return "the Hub is off (HF_HUB_OFFLINE=1) and the files are not in the local cache"
        if name == "HFValidationError":
            return f"not a Hub model id nor an existing folder ({one_line(error)})"
        if name == "HfHubHTTPError":
            return f"the Hub at {constants.ENDPOINT} answered with an error ({one_line(error)})"
        if _from_hub_client(error):
            return (f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({one_line(error)}), and it is "
                    "not in the local cache; check the network (or HF_ENDPOINT), or download it first")
    return None


def _from_hub_client(error: BaseException) -> bool:
    """Raised by huggingface_hub or by the HTTP client it uses for the Hub (httpx; requests for datasets)."""
    module = type(error).__module__.split(".")[0]
    if module in ("huggingface_hub", "httpx", "httpx2"):
        return True
    return module == "requests" and isinstance(error, ConnectionError | TimeoutError | OSError)


def _in_cache(name: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(name, file, revision=revision), str) for file in PROBE_FILES)
    except Exception:  # not a valid repository id: the Hub request says so in one line
        return False
