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
    """Sample, judge and pair; write the pairs to ``output`` and print the counts. Exit status 0, or 1 with no
    pair."""
    from llm_trainer.data import build_processor
    from llm_trainer.modeling import load_tokenizer
    from llm_trainer.training.pairs import pairs_from_adapter, write_pairs_jsonl

    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    print(f"answering {len(processed['train'])} train questions with {label} "
          f"({cfg.training.dpo.pairs_samples} samples each)", file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    splits, counts = pairs_from_adapter(cfg, processed, tokenizer, adapter.base_model, str(adapter.path))
    staging = output.with_name(f".{output.name}.tmp")
    written = write_pairs_jsonl(splits["train"], str(staging))
    with open(staging, "a", encoding="utf-8") as out:  # the held-out pairs too: the reader splits its own way
        for row in splits["validation"]:
            out.write(json.dumps({k: row[k] for k in ("prompt", "chosen", "rejected", "reference_answer")},
                                 ensure_ascii=False) + "\n")
            written += 1
    staging.replace(output)
    print(json.dumps({"output": str(output), **counts}, indent=2))
    return 0 if written else 1
