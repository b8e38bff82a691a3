"""Chat-template tokenization with prompt masking, over-length handling and packing.

Labels are -100 on the prompt (system, user and the assistant header) and hold the assistant's tokens
plus its end-of-turn token. The prompt and the completion are tokenized separately so the mask boundary
is exact for any tokenizer; the chat template must render the prompt as a prefix of the conversation.

Speed: each conversation is rendered once. Its prompt is the rendered text less the assistant's content and
the template's end-of-turn suffix; that suffix is learnt from the batch's first row, whose prompt is also
rendered with ``add_generation_prompt=True`` to check the split. A row whose text does not end with its
content and that suffix (a template that rewrites the content) has its prompt rendered separately.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets
import numpy as np

from llm_trainer.config import DataConfig
from llm_trainer.data.packing import pack_dataset
from llm_trainer.data.labels import IGNORE_INDEX  # noqa: F401  (imported from here by the trainers)
from llm_trainer.errors import ConfigError, DataError

TOKENIZED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "prompt_length": datasets.Value("int32"),
        "label_tokens": datasets.Value("int32"),
    }
)
# While tokenizing, each row also says how many completion tokens truncation cut (the report counts them).
CUT_TOKENS = "cut_tokens"
MAP_FEATURES = datasets.Features({**TOKENIZED_FEATURES, CUT_TOKENS: datasets.Value("int32")})
# Above this share of rows dropped as too long, processing warns (in the log and the report's warnings).
WARN_DROPPED_SHARE = 0.2
logger = logging.getLogger(__name__)


def render_prompt_and_completion(tokenizer: Any, conversations: list[list[dict]]) -> tuple[list[str], list[str]]:
    """Each conversation rendered by the chat template, cut into prompt and completion text."""
    if not conversations:
        return [], []
    fulls = tokenizer.apply_chat_template(conversations, tokenize=False)
    (first_prompt,) = _render_prompts(tokenizer, conversations[:1], fulls[:1])
    first_content = conversations[0][-1]["content"]
    after = fulls[0][len(first_prompt):]
    suffix = after[len(first_content):] if after.startswith(first_content) else None
    prompts: list[str | None] = [None] * len(fulls)
    for index, (full, conversation) in enumerate(zip(fulls, conversations)):
        if suffix is not None:
            tail = conversation[-1]["content"] + suffix
            if full.endswith(tail):
                prompts[index] = full[: len(full) - len(tail)]
    slow = [i for i, prompt in enumerate(prompts) if prompt is None]
    for i, prompt in zip(slow, _render_prompts(tokenizer, [conversations[i] for i in slow], [fulls[i] for i in slow])):
        prompts[i] = prompt
    return prompts, [full[len(prompt):] for full, prompt in zip(fulls, prompts)]  # type: ignore[arg-type]


def _render_prompts(tokenizer: Any, conversations: list[list[dict]], fulls: list[str]) -> list[str]:
    if not conversations:
        return []
    prompts = tokenizer.apply_chat_template([c[:-1] for c in conversations], tokenize=False,
                                            add_generation_prompt=True)
    if not all(full.startswith(prompt) for prompt, full in zip(prompts, fulls)):
        raise ConfigError("model.chat_template: the prompt with add_generation_prompt=True is not a prefix of "
                          "the full conversation, so the assistant's tokens cannot be masked exactly")
    return prompts


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens; straight through the Rust tokenizer when there is one (the same ids
    as ``tokenizer(texts, add_special_tokens=False)``, without building offsets and attention masks)."""
    if getattr(tokenizer, "is_fast", False):
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenize_batch(batch: dict[str, list], tokenizer: Any, max_seq_length: int, truncate: bool) -> dict[str, list]:
    """A batch of conversations -> input ids and labels masked on the prompt, truncated if asked."""
    prompts, completions = render_prompt_and_completion(tokenizer, batch["messages"])
    prompt_ids = encode(tokenizer, prompts)
    completion_ids = encode(tokenizer, completions)
    out: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "prompt_length": [], "label_tokens": [],
                            CUT_TOKENS: []}
    for prompt, completion in zip(prompt_ids, completion_ids):
        full = len(completion)
        if truncate and len(prompt) < max_seq_length:
            completion = completion[: max_seq_length - len(prompt)]
        out[CUT_TOKENS].append(full - len(completion))
        out["input_ids"].append(prompt + completion)
        out["labels"].append([IGNORE_INDEX] * len(prompt) + completion)
        out["length"].append(len(prompt) + len(completion))
        out["prompt_length"].append(len(prompt))
        out["label_tokens"].append(len(completion))
    return out


def tokenize_splits(processed: datasets.DatasetDict, tokenizer: Any, cfg: DataConfig, batch_fn: Any = None
                    ) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """``batch_fn``: a processor's own ``tokenize_batch`` (same arguments and columns), e.g. multi-turn masking."""
    from llm_trainer.data.collate import grouped_efficiency  # collate imports this module

    result, report = {}, {"max_seq_length": cfg.max_seq_length, "packing": cfg.packing, "splits": {}}
    for name, split in processed.items():
        if len(split) == 0:
            result[name] = _empty_tokenized()
            report["splits"][name] = {"samples": 0, "dropped": {}}
            continue
        tokenized = split.map(
            batch_fn or tokenize_batch,
            batched=True,
            batch_size=cfg.map_batch_size,
            num_proc=cfg.num_proc if cfg.num_proc > 1 and len(split) >= 10_000 else None,
            remove_columns=split.column_names,
            features=MAP_FEATURES,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": cfg.max_seq_length,
                       "truncate": cfg.overlength == "truncate"},
            desc=f"tokenize {name}",
        )
        metadata = tokenized.select_columns(["length", "label_tokens", CUT_TOKENS]).data
        lengths, label_tokens, cut = (metadata.column(c).to_numpy().astype(np.int64)
                                      for c in ("length", "label_tokens", CUT_TOKENS))
        tokenized = tokenized.remove_columns([CUT_TOKENS])
        histogram = length_histogram(lengths + cut, cfg.max_seq_length)  # lengths before any truncation
        too_long = lengths > cfg.max_seq_length
        overlength = overlength_counts(cfg.overlength, lengths, cut, too_long)
        dropped = {("prompt_too_long" if cfg.overlength == "truncate" else "too_long"): int(too_long.sum())}
        if too_long.any():
            tokenized = tokenized.select(np.flatnonzero(~too_long))
            lengths, label_tokens = lengths[~too_long], label_tokens[~too_long]
        split_report: dict[str, Any] = {"samples": len(tokenized), "dropped": {k: v for k, v in dropped.items() if v},
                                        "overlength": overlength, **length_stats(lengths),
                                        "length_histogram": histogram}
        split_report["label_tokens"] = int(label_tokens.sum())
        if cfg.packing and len(tokenized):
            tokenized, packing = pack_dataset(tokenized, cfg.max_seq_length)
            split_report.update(packing)
            lengths = np.asarray(tokenized.data.column("length").to_numpy(), dtype=np.int64)
        # Batches of rows (blocks when packing) of similar length, each padded to its longest row: SDPA and
        # eager attention. flash_attention_2 flattens batches without padding (1.0).
        split_report["compute_efficiency"] = grouped_efficiency(lengths)
        result[name] = tokenized
        report["splits"][name] = split_report
    warning = overlength_warning(report, cfg)
    if warning:
        logger.warning(warning)
        report["warnings"] = [warning]
    _require_training_samples(processed, result, report, cfg)
    return datasets.DatasetDict(result), report


def overlength_counts(policy: str, lengths: np.ndarray, cut: np.ndarray, too_long: np.ndarray) -> dict[str, Any]:
    """Rows and tokens the ``overlength`` policy dropped (and, for truncate, cut), with the dropped share."""
    counts: dict[str, Any] = {"policy": policy}
    if policy == "truncate":
        counts.update(truncated_rows=int((cut > 0).sum()), truncated_tokens=int(cut.sum()))
    counts.update(dropped_rows=int(too_long.sum()), dropped_tokens=int((lengths[too_long] + cut[too_long]).sum()),
                  dropped_share=round(float(too_long.mean()), 4) if len(lengths) else 0.0)
    return counts


def overlength_warning(report: dict[str, Any], cfg: DataConfig) -> str | None:
    """One line when more than WARN_DROPPED_SHARE of all tokenized rows were dropped as too long."""
    splits = [s for s in report["splits"].values() if "overlength" in s]
    dropped = sum(s["overlength"]["dropped_rows"] for s in splits)
    rows = sum(s["samples"] for s in splits) + dropped
    if not rows or dropped / rows <= WARN_DROPPED_SHARE:
        return None
    if cfg.overlength == "truncate":
        return (f"data.max_seq_length: {dropped:,} of {rows:,} rows ({dropped / rows:.0%}) were dropped: their prompt "
                f"alone reaches {cfg.max_seq_length} tokens, so nothing of the answer is left to train on; raise "
                f"data.max_seq_length")
    return (f"data.max_seq_length: {dropped:,} of {rows:,} rows ({dropped / rows:.0%}) are longer than "
            f"{cfg.max_seq_length} tokens and were dropped (overlength: drop); raise data.max_seq_length, or set "
            f"data.overlength=truncate to keep them cut")


def _require_training_samples(processed: datasets.DatasetDict, result: dict[str, Any], report: dict[str, Any],
                              cfg: DataConfig) -> None:
    """No train sample is an error here, at the end of processing, not a success that the train step trips on."""
    if "train" not in result or len(result["train"]):
        return
    rows = len(processed["train"])
    if rows == 0:
        raise DataError(f"data.splits: the train split is empty: no kept row hashed into it "
                        f"({split_sizes(processed, cfg)}); add rows or raise data.splits.train")
    dropped = ", ".join(f"{k}: {v}" for k, v in report["splits"]["train"]["dropped"].items())
    raise DataError(f"data.max_seq_length: no training sample left: {rows} train rows, all dropped in "
                    f"tokenization ({dropped}) at data.max_seq_length = {cfg.max_seq_length} tokens")


def split_sizes(processed: datasets.DatasetDict, cfg: DataConfig) -> str:
    """The rows per split and each split's configured fraction, for error messages."""
    return ", ".join(f"{name}: {len(split)} rows at {getattr(cfg.splits, name)}" for name, split in processed.items())


def length_histogram(lengths: np.ndarray, max_seq_length: int, bins: int = 32) -> dict[str, list]:
    """Counts of token lengths (before any row is dropped or truncated). One bin edge is ``max_seq_length``
    itself, so the counts past it are exactly the over-length rows: bins of one width up to it, at most a
    quarter of ``bins`` (wider ones) past it, up to the longest row."""
    below = max(bins - bins // 4, 1)
    edges = np.linspace(0, max_seq_length, below + 1)
    top = int(lengths.max()) if len(lengths) else 0
    if top > max_seq_length:
        above = min(bins // 4, int(np.ceil((top - max_seq_length) / (max_seq_length / below)))) or 1
        edges = np.concatenate([edges, np.linspace(max_seq_length, top, above + 1)[1:]])
    # Bins are (left, right], so a row of exactly max_seq_length tokens counts below the line, as it should.
    bins_of = np.clip(np.searchsorted(edges, lengths, side="left") - 1, 0, len(edges) - 2)
    counts = np.bincount(bins_of, minlength=len(edges) - 1)
    return {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]}


def length_stats(lengths: np.ndarray) -> dict[str, float | int]:
    """Token total and length min/mean/p50/p95/max of a split, for the processing report."""
    if len(lengths) == 0:
        return {"tokens": 0}
    return {
        "tokens": int(lengths.sum()),
        "length_min": int(lengths.min()),
        "length_mean": round(float(lengths.mean()), 2),
        "length_p50": int(np.percentile(lengths, 50)),
        "length_p95": int(np.percentile(lengths, 95)),
        "length_max": int(lengths.max()),
    }


def _empty_tokenized() -> datasets.Dataset:
    return datasets.Dataset.from_dict({k: [] for k in TOKENIZED_FEATURES}, features=TOKENIZED_FEATURES)
