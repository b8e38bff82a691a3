"""The `use` command: chat, one prompt, a JSONL file, or a merged model.

Only answers go to ``args.answer_stream`` (the original stdout); everything else goes to stderr, so
``use --prompt ... > answer.txt`` holds the answer alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_trainer.chat import answer_file, base_messages, chat_loop, merge_adapter, merged_from
from llm_trainer.config import RunConfig
from llm_trainer.inference import decoding, generate_batch, load_for_inference
from llm_trainer.training import LoraAdapter


def use(cfg: RunConfig, adapter: LoraAdapter, args: argparse.Namespace, label: str | None = None) -> int:
    out = getattr(args, "answer_stream", None) or sys.stdout
    label = label or f"the adapter in {adapter.path}"
    if args.merge:
        weights = getattr(args, "merge_weights", "original")
        print(f"merging on the CPU into {merged_from(cfg.model, weights)}", file=sys.stderr, flush=True)
        folder = merge_adapter(cfg.model, adapter.base_model, adapter.path, args.merge, args.overwrite, weights)
        print(f"merged model written to {folder}", file=sys.stderr)
        if not (args.interactive or args.prompt is not None or args.input):
            return 0
    from llm_trainer.modeling import load_tokenizer

    print(f"loading {label} (base model {adapter.base_model})", file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    model = load_for_inference(cfg.model, adapter.base_model, adapter.path, tokenizer)
    max_new, system = args.max_new_tokens or cfg.evaluation.max_new_tokens, cfg.data.system_prompt
    sampling = decoding(args.temperature, args.top_p)
    if args.prompt is not None:
        if not args.prompt.strip():
            print("error: --prompt is empty", file=sys.stderr)
            return 2
        conversation = base_messages(system) + [{"role": "user", "content": args.prompt.strip()}]
        print(generate_batch(model, tokenizer, [conversation], max_new, 1, sampling=sampling)[0].text, file=out,
              flush=True)
    if args.input:
        counts = answer_file(model, tokenizer, system, Path(args.input), Path(args.output), max_new,
                             cfg.evaluation.batch_size, sampling)
        print(f"answered {counts['answered']} prompts, {counts['errors']} lines with errors -> {args.output}",
              file=sys.stderr)
    if args.interactive:
        chat_loop(model, tokenizer, system, max_new, input, out, sampling, loaded=label)
    return 0
