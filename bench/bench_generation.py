"""Benchmark 4: evaluation throughput in generated tokens per second, tiny model, CPU.

project:  the evaluator's batched greedy generation, ``llm_trainer.inference.generate_batch`` (left padding,
          KV cache, length-sorted batches) at batch 16, on the quickstart's 4-bit tiny base model.
baseline: the same model and prompts, one prompt at a time: chat template, ``model.generate`` greedy with
          the KV cache, no padding.

Generated tokens are counted the same way for both (new tokens up to the first end-of-turn/end-of-text
token). One process, model loaded once, a short warm-up, then runs alternate; medians are quoted.
"""

from __future__ import annotations

import argparse
import time

from bench.common import median, quickstart_assets, report, row

PROMPTS, MAX_NEW_TOKENS, BATCH = 32, 64, 16


def one_at_a_time(model, tokenizer, conversations, max_new_tokens: int) -> int:
    import torch

    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>")]
    stops = sorted({tokenizer.eos_token_id, *stops})
    generated = 0
    for conversation in conversations:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        new = output[0, ids.shape[1]:].tolist()
        generated += next((k for k, t in enumerate(new) if t in stops), len(new))
    return generated


def main(prompts: int = PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS, batch: int = BATCH, repeats: int = 3) -> dict:
    from llm_trainer.inference import generate_batch, load_for_inference
    from llm_trainer.base_model import resolve_base_model

    cfg, _, processed, tokenizer = quickstart_assets()
    model = load_for_inference(cfg.model, resolve_base_model(cfg.model, tokenizer, cfg.seed).name_or_path)
    test = processed["test"].select(range(min(prompts, len(processed["test"]))))
    conversations = [messages[:-1] for messages in test["messages"]]
    generate_batch(model, tokenizer, conversations[:2], 4, batch)  # warm-up
    one_at_a_time(model, tokenizer, conversations[:2], 4)
    rows, notes, raw = [], [], {}
    # The tiny base model usually ends its turn after a few tokens; forcing max_new_tokens (min_new_tokens,
    # picked up by model.generate from the generation config in both paths) measures decoding proper.
    for mode, min_new in (("full length", max_new_tokens), ("natural stop", None)):
        model.generation_config.min_new_tokens = min_new
        runs: dict[str, list[tuple[int, float]]] = {"batched": [], "single": []}
        for _ in range(repeats):
            started = time.perf_counter()
            tokens = sum(g.new_tokens for g in generate_batch(model, tokenizer, conversations, max_new_tokens, batch))
            runs["batched"].append((tokens, time.perf_counter() - started))
            started = time.perf_counter()
            tokens = one_at_a_time(model, tokenizer, conversations, max_new_tokens)
            runs["single"].append((tokens, time.perf_counter() - started))
        rate = {k: median([t / s for t, s in v]) for k, v in runs.items()}
        rows.append(row(f"generated tokens/s, batch {batch} vs one at a time ({mode})", rate["batched"],
                        rate["single"], "tokens/s", f">= 4 at batch {batch}",
                        samples={k: [round(t / s, 1) for t, s in v] for k, v in runs.items()}))
        notes.append(f"{mode}: {runs['batched'][0][0]} tokens generated per batched run, {runs['single'][0][0]} per "
                     "one-at-a-time run" + (f" (min_new_tokens = max_new_tokens = {max_new_tokens})" if min_new else
                                            " (the base model's own end-of-turn/end-of-text decides)") + ".")
        raw[mode] = runs
    model.generation_config.min_new_tokens = None
    notes.append(f"{len(conversations)} test prompts of data/sample, greedy, max_new_tokens {max_new_tokens}; "
                 f"{repeats} alternating runs in one process, medians; tiny base model, 4-bit NF4, float32 compute, "
                 "CPU.")
    return report({"name": "generation", "title": "4. Evaluation throughput", "rows": rows, "notes": notes,
                   "project": f"llm_trainer.inference.generate_batch, batch {batch}",
                   "baseline": "model.generate one prompt at a time (same model, prompts, greedy settings)",
                   "raw": raw})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=PROMPTS)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.prompts, args.max_new_tokens, args.batch, args.repeats)
