"""The quickstart's processed data and tokenizer, for tests that train on it in this process."""

from __future__ import annotations

from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def prepare_quickstart(overrides: list[str]):
    """(config, processor, processed splits, tokenizer) of configs/quickstart.yaml with ``overrides``."""
    from llm_trainer.base_model import prepare_tokenizer
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor

    cfg = load_config(QUICKSTART, overrides)
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    return cfg, processor, processed, tokenizer
