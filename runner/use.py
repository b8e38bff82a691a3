"""The `use` command: chat, one prompt, a JSONL file, or a merged model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_trainer.chat import answer_file, base_messages, chat_loop, merge_adapter
from llm_trainer.config import RunConfig
from llm_trainer.inference import generate_batch, load_for_inference
from llm_trainer.training import LoraAdapter


def use(cfg: RunConfig, adapter: LoraAdapter, args: argparse.Namespace) -> int:
    if args.merge:
        folder = merge_adapter(cfg.model, adapter.base_model, adapter.path, args.merge)
        print(f"merged model written to {folder}")
        if not (args.interactive or args.prompt or args.input):
            return 0
    from llm_trainer.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    model = load_for_inference(cfg.model, adapter.base_model, adapter.path)
    max_new, system = cfg.evaluation.max_new_tokens, cfg.data.system_prompt
    if args.prompt is not None:
        if not args.prompt.strip():
            print("error: --prompt is empty", file=sys.stderr)
            return 2
        conversation = base_messages(system) + [{"role": "user", "content": args.prompt.strip()}]
        print(generate_batch(model, tokenizer, [conversation], max_new, 1)[0].text)
    if args.input:
        counts = answer_file(model, tokenizer, system, Path(args.input), Path(args.output), max_new,
                             cfg.evaluation.batch_size)
        print(f"answered {counts['answered']} prompts, {counts['errors']} lines with errors -> {args.output}")
    if args.interactive:
        chat_loop(model, tokenizer, system, max_new, input, sys.stdout)
    return 0
