"""An optional local LLM judge for long and prose references (``evaluation.judge``), off by default.

The judge sees the question, the reference and the extracted answer, and its verdict is one token: the
next-token logits of "yes" and "no" after a grading prompt are compared, so the verdict never depends on
decoding settings or on parsing free text. Prompts and verdicts go into the examples table.
"""

from __future__ import annotations

from typing import Any

from llm_trainer.config import JudgeConfig, ModelConfig

PROMPT = ("You are grading an answer to a question against a reference answer.\n\nQuestion: {question}\n\n"
          "Reference answer: {reference}\n\nCandidate answer: {candidate}\n\nDoes the candidate answer mean the "
          "same as the reference answer? Reply with one word: yes or no.")
MAX_FIELD_CHARS = 4000


def _clip(text: str) -> str:
    text = (text or "").strip()
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS // 2] + " ... " + text[-MAX_FIELD_CHARS // 2:]


def judge_prompt(question: str, reference: str, candidate: str) -> str:
    """The grading prompt for one answer, each field clipped to MAX_FIELD_CHARS."""
    return PROMPT.format(question=_clip(question), reference=_clip(reference), candidate=_clip(candidate))


def verdict_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """First-token ids of the ways a reply may start with yes / no; a first token both share (a bare space in
    a small vocabulary) says nothing and is left out."""
    def first_ids(words: tuple[str, ...]) -> set[int]:
        return {tokenizer.encode(word, add_special_tokens=False)[0] for word in words}

    yes, no = first_ids(("yes", "Yes", " yes", " Yes")), first_ids(("no", "No", " no", " No"))
    yes, no = yes - no, no - yes
    if not yes or not no:
        raise ValueError("evaluation.judge: the judge's tokenizer cannot tell 'yes' from 'no' by the first token")
    return sorted(yes), sorted(no)


def judge(model: Any, tokenizer: Any, items: list[tuple[str, str, str]], batch_size: int = 8
          ) -> list[dict[str, Any]]:
    """One verdict per (question, reference, candidate): {"judge_prompt", "judge_verdict", "judge_p_yes"}."""
    import torch

    from llm_trainer.inference import context_window, encode_prompts, left_pad

    yes_ids, no_ids = verdict_token_ids(tokenizer)
    prompts = [judge_prompt(*item) for item in items]
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    encoded, _ = encode_prompts(tokenizer, conversations, max(1, context_window(model, tokenizer) - 1))
    device = next(model.parameters()).device
    results: list[dict[str, Any]] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        input_ids, attention = left_pad(batch, tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                           logits_to_keep=1).logits[:, -1].float()
        probabilities = torch.softmax(logits, dim=-1)
        p_yes = probabilities[:, yes_ids].sum(-1)
        p_no = probabilities[:, no_ids].sum(-1)
        for row in range(len(batch)):
            results.append({"judge_prompt": prompts[start + row], "judge_verdict": bool(p_yes[row] > p_no[row]),
                            "judge_p_yes": float(p_yes[row] / (p_yes[row] + p_no[row]).clamp_min(1e-12))})
    return results


def judge_model_config(model: ModelConfig, judge_cfg: JudgeConfig) -> ModelConfig:
    """The run's model settings with the judge's model, precision and revision."""
    return model.model_copy(update={"base_model": judge_cfg.model, "revision": judge_cfg.revision,
                                    "load_in_4bit": judge_cfg.load_in_4bit})


def load_judge(model: ModelConfig, judge_cfg: JudgeConfig, run_tokenizer: Any, seed: int,
               run_base_model: str | None = None) -> tuple[Any, Any]:
    """The judge model and its tokenizer; ``tiny-llama`` is the run's own offline tiny base model
    (``run_base_model`` when the caller has it resolved)."""
    from llm_trainer.base_model import resolve_base_model
    from llm_trainer.inference import load_for_inference
    from llm_trainer.modeling import load_tokenizer

    cfg = judge_model_config(model, judge_cfg)
    tokenizer = run_tokenizer if cfg.is_tiny else load_tokenizer(cfg.base_model, cfg)
    if cfg.is_tiny and run_base_model is not None:
        return load_for_inference(cfg, run_base_model), tokenizer
    return load_for_inference(cfg, resolve_base_model(cfg, tokenizer, seed).name_or_path), tokenizer
