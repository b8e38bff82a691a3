"""The `pairs` command: preference pairs from a registered version's own answers, judged by the verifier.

The version answers each train question of the config's data ``training.dpo.pairs_samples`` times; the verifier
(``training.dpo.verifier``) marks each answer correct or wrong; a correct and a wrong answer to one question make a
pair. The pairs go to a JSON-lines file in the preference processor's ``pairs_chat`` shape, so that a DPO config with
``data.processor: preference`` trains on them; the counts (questions with no correct, no wrong, or no answer) are
printed. In a pipeline, ``training.dpo.pairs: verifier`` runs the same work as the build_pairs step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from llm_trainer.training import LoraAdapter


def check_output(path: Path, overwrite: bool) -> None:
    """Before anything loads: the output file must be new (or --overwrite given) and its folder must exist."""
    if path.exists() and not overwrite:
        raise UserError(f"--output {path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"--output {path}: the folder {path.parent} does not exist")


def write_pairs(cfg: RunConfig, adapter: LoraAdapter, output: Path, label: str) -> int:
    """Sample, judge and pair; write the pairs (train and held-out alike: the reader splits its own way) to
    ``output`` and print the counts. No pair at all is a DataError (one line, exit status 2)."""
    from llm_trainer.data import build_processor
    from llm_trainer.modeling import load_tokenizer
    from llm_trainer.training.pairs import pairs_from_adapter, write_pairs_jsonl

    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    d = cfg.training.dpo
    print(f"answering up to {d.pairs_max_questions or 'all'} of the {len(processed['train'])} train questions with "
          f"{label} ({d.pairs_samples} samples each)", file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    splits, counts = pairs_from_adapter(cfg, processed, tokenizer, adapter.base_model, str(adapter.path))
    write_pairs_jsonl(splits.values(), output)
    print(json.dumps({"output": str(output), **counts}, indent=2))
    return 0
