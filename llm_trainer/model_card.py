"""The adapter's model card (README.md): what it was trained from and on, how, how well, and how to load it.

peft writes a placeholder card ("[More Information Needed]") whose ``base_model`` is whatever path the base
was loaded from; this one names the base model's Hub id, the data set with its fingerprint and licence, the
training config, the metrics per answer type against the base model, training time and hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_trainer.config import TINY_MODEL_NAME

# Licences of the data sets this project ships configs for (the Hub's own card is the authority).
KNOWN_LICENCES = {"facebook/natural_reasoning": "cc-by-nc-4.0", "google-research-datasets/mbpp": "cc-by-4.0",
                  "openai/openai_humaneval": "mit"}
CARD_FILE = "README.md"


@dataclass
class CardInfo:
    """The facts a model card states: base model, data, config, metrics, training figures and version."""

    name: str
    base_model: str  # the config's model.base_model: a Hub id, a local path or 'tiny-llama'
    data_source: str
    data_fingerprint: str | None = None
    data_licence: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the sections that made the adapter
    metrics: dict[str, Any] = field(default_factory=dict)  # the fine-tuned model's evaluation
    base_metrics: dict[str, Any] = field(default_factory=dict)  # the base model's, on the same rows
    training: dict[str, Any] = field(default_factory=dict)  # wall_time_s, global_step, peak_memory_mb, ...
    hardware: str | None = None
    version: str | None = None  # the registered version (number and stage), when there is one


def licence_of(source: str) -> str | None:
    """The licence of a known Hub data set (natural_reasoning, mbpp, openai_humaneval), else None."""
    return KNOWN_LICENCES.get(source)


def card_from_config(cfg: Any, **extra: Any) -> CardInfo:
    """A card's facts from a RunConfig (or anything with its data/model/lora/training sections)."""
    sections = {name: getattr(cfg, name).model_dump(mode="json") for name in ("data", "model", "lora", "training")
                if hasattr(cfg, name)}
    card = cfg.hardware.card if getattr(cfg, "hardware", None) is not None else None
    return CardInfo(name=cfg.name, base_model=cfg.model.base_model, data_source=cfg.data.source,
                    data_licence=licence_of(cfg.data.source), config={"seed": getattr(cfg, "seed", None), **sections},
                    **({"hardware": card} if card else {}), **extra)


def render(info: CardInfo) -> str:
    """The model card's markdown, with Hub front matter (base model, data set, licence) where known."""
    from llm_trainer.data.sources import is_local_source

    hub_base = info.base_model != TINY_MODEL_NAME and not info.base_model.startswith(("/", ".", "~")) \
        and not Path(info.base_model).expanduser().exists()
    on_hub_data = not is_local_source(info.data_source)
    front: dict[str, Any] = {"library_name": "peft", "pipeline_tag": "text-generation",
                             "tags": ["lora", "qlora", "peft", "llm-trainer"]}
    if hub_base:
        front["base_model"] = info.base_model
    if on_hub_data:
        front["datasets"] = [info.data_source]
    if info.data_licence:
        front["license"] = info.data_licence
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {info.name}: a LoRA adapter for {info.base_model}", ""]
    if info.version:
        lines += [f"Registered version: {info.version}.", ""]
    lines += ["## Base model and data", "",
              f"- Base model: `{info.base_model}`" + (" (the project's offline tiny Llama, built from the data)"
                                                      if info.base_model == TINY_MODEL_NAME else ""),
              f"- Data set: `{info.data_source}`"
              + (f", fingerprint `{info.data_fingerprint}`" if info.data_fingerprint else ""),
              f"- Data licence: {info.data_licence or 'see the data set card'}"
              + (" (non-commercial: the adapter inherits the restriction)" if (info.data_licence or "").startswith(
                  "cc-by-nc") else ""), ""]
    lines += _metrics_section(info)
    lines += _training_section(info)
    lines += ["## How to load", "", "With peft:", "", "```python",
              "from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
              'model = AutoPeftModelForCausalLM.from_pretrained("<this folder or Hub repo>")',
              'tokenizer = AutoTokenizer.from_pretrained("<this folder or Hub repo>")', "```", "",
              "With this project (chat, one prompt, a JSONL file):", "", "```bash",
              "python run_pipeline.py use --config CONFIG --adapter <this folder> --interactive", "```", ""]
    return "\n".join(lines)


def _metrics_section(info: CardInfo) -> list[str]:
    names = sorted(k for k, v in info.metrics.items() if _is_number(v))
    if not names:
        return ["## Evaluation", "", "Not evaluated yet (the full pipeline evaluates before it registers).", ""]
    lines = ["## Evaluation", "", "On the same held-out test rows; per answer type where the name says so "
             "(`_single_word`, `_short`, `_long`).", "", "| metric | base model | fine-tuned |", "|---|---|---|"]
    for name in names:
        base = info.base_metrics.get(name)
        lines.append(f"| {name} | {_cell(base)} | {_cell(info.metrics[name])} |")
    return [*lines, ""]


def _training_section(info: CardInfo) -> list[str]:
    lines = ["## Training", ""]
    shown = {k: info.training[k] for k in ("wall_time_s", "global_step", "trained_tokens", "train_tokens_per_second",
                                           "peak_memory_mb") if k in info.training}
    if shown:
        lines += [f"- {k}: {_cell(v)}" for k, v in shown.items()]
    lines += [f"- Hardware: {info.hardware or 'not recorded'}", ""]
    if info.config:
        lines += ["Config:", "", "```yaml", yaml.safe_dump(info.config, sort_keys=False).strip(), "```", ""]
    return lines


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_model_card(folder: str | Path, info: CardInfo) -> Path:
    """Write (or replace peft's) README.md in an adapter folder."""
    path = Path(folder) / CARD_FILE
    path.write_text(render(info))
    return path

