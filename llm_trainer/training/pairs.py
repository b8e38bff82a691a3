"""Preference pairs built by the project's own verifier: on-policy data for DPO.

The model answers each train question ``pairs_samples`` times (sampled at ``pairs_temperature``); the verifier
(``training.dpo.verifier``, a registered reward such as ``answer_correct``: the evaluation's own judge) scores every
answer against the row's reference; each question with at least one correct and one wrong answer gives up to
``pairs_per_question`` pairs of a verified-correct (chosen) and a wrong (rejected) answer, each answer used once.
Questions with no correct answer, no wrong answer, or no answer at all (every sample empty or without a final
answer) are counted, not silently lost.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from llm_trainer.registry import REWARDS
from llm_trainer.training.kit import verifiable_prompts
from llm_trainer.training.reward_variance import sample_answers
from llm_trainer.training.rewards import RewardFunction, has_final_answer

logger = logging.getLogger(__name__)
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "reference_answer")


def sample_and_score(model: Any, tokenizer: Any, questions: Any, cfg: Any, reward: Any, greedy: bool = False
                     ) -> tuple[list[list[str]], np.ndarray]:
    """``pairs_samples`` sampled answers to each question (TRL's prompt rows: ``prompt``, ``reference_answer``), or
    the one greedy answer, and their scores by ``reward`` (the verifier), shaped (questions, samples)."""
    d = cfg.training.dpo
    k = 1 if greedy else d.pairs_samples
    conversations, references, answers = sample_answers(model, tokenizer, questions, k, d.pairs_max_new_tokens,
                                                        0.0 if greedy else d.pairs_temperature)
    texts = [a.text for a in answers]
    verifier = RewardFunction(d.verifier.rpartition(":")[2], reward)
    scores = np.asarray(verifier(prompts=conversations, completions=texts,
                                 completion_ids=[[0] * a.new_tokens for a in answers], reference_answer=references))
    return [texts[i * k:(i + 1) * k] for i in range(len(questions))], scores.reshape(len(questions), k)


def make_pairs(answers: list[list[str]], scores: np.ndarray, per_question: int, seed: int,
               answered: Any = has_final_answer, gold: list[str] | None = None, min_pass_rate: float = 0.0,
               greedy: list[tuple[str, float]] | None = None) -> tuple[list[tuple[int, str, str]], dict[str, int]]:
    """(question index, chosen, rejected) for each question with correct (score >= 1) and wrong (score <= 0)
    answers: up to ``per_question`` pairs, each distinct answer used once, drawn by the seed; and the counts (a
    question none of whose answers is ``answered`` counts as no answer). With ``gold`` (the data's own answer to
    each question), a question with wrong answers and no correct one gives one pair, gold against a wrong answer. A
    question with a share of correct answers under ``min_pass_rate`` gives no pair (counted as rarely correct). With
    ``greedy`` (each question's greedy answer and its score), a question answered right greedily gives no pair, and
    the others' wrong greedy answer is the first one rejected: the pairs move the answer evaluation reads."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, str, str]] = []
    counts = {"pairs_questions": len(answers), "pairs_no_answer": 0, "pairs_no_correct": 0, "pairs_no_wrong": 0,
              "pairs_gold_chosen": 0, "pairs_rarely_correct": 0, "pairs_greedy_right": 0}
    for index, (texts, row) in enumerate(zip(answers, scores)):
        right = list(dict.fromkeys(t for t, s in zip(texts, row) if s >= 1.0 and t.strip()))
        wrong = list(dict.fromkeys(t for t, s in zip(texts, row) if s <= 0.0 and t.strip()))
        if gold is not None and wrong and not right and gold[index].strip():
            pairs.append((index, gold[index], str(wrong[rng.integers(len(wrong))])))
            counts["pairs_gold_chosen"] += 1
            continue
        if not any(text.strip() and answered(text) for text in texts):
            counts["pairs_no_answer"] += 1
            continue
        if not right:
            counts["pairs_no_correct"] += 1
            continue
        if not wrong:
            counts["pairs_no_wrong"] += 1
            continue
        if float(np.mean(row >= 1.0)) < min_pass_rate:
            counts["pairs_rarely_correct"] += 1
            continue
        n = min(per_question, len(right), len(wrong))
        rejected = [str(text) for text in rng.permutation(wrong)]
        if greedy is not None:
            text, score = greedy[index]
            if score >= 1.0:
                counts["pairs_greedy_right"] += 1
                continue
            if text.strip():
                rejected = [text, *[other for other in rejected if other != text]]
                n = min(per_question, len(right), len(rejected))
        for chosen, wrong_answer in zip(rng.permutation(right)[:n], rejected[:n]):
            pairs.append((index, str(chosen), wrong_answer))
    counts["pairs"] = len(pairs)
    counts["pairs_questions_used"] = len({index for index, _, _ in pairs})
    return pairs, counts


def build_pairs(model: Any, tokenizer: Any, processed: Any, cfg: Any) -> tuple[Any, dict[str, float]]:
    """Verifier-built pairs from the train questions of ``processed`` (rows with a verifiable reference, at most
    ``pairs_max_questions`` drawn by the seed), as a Dataset of conversational ``prompt``, ``chosen`` and
    ``rejected`` (TRL's preference shape) plus ``reference_answer``; and the counts."""
    import datasets

    from llm_trainer.errors import DataError

    d = cfg.training.dpo
    started = time.time()
    reward = REWARDS.resolve(d.verifier)(cfg)
    questions, counts = verifiable_prompts(processed, cfg, trainer="dpo",
                                           short_references=getattr(reward, "needs_short_reference", True),
                                           with_answer=d.pairs_gold_chosen)
    questions = questions.shuffle(seed=cfg.seed)
    if d.pairs_max_questions is not None:
        questions = questions.select(range(min(d.pairs_max_questions, len(questions))))
    answers, scores = sample_and_score(model, tokenizer, questions, cfg, reward)
    greedy = None
    if d.pairs_greedy_wrong:
        greedy_answers, greedy_scores = sample_and_score(model, tokenizer, questions, cfg, reward, greedy=True)
        greedy = [(texts[0], float(row[0])) for texts, row in zip(greedy_answers, greedy_scores)]
    pairs, pair_counts = make_pairs(answers, scores, d.pairs_per_question, cfg.seed,
                                    getattr(reward, "answered", has_final_answer),
                                    list(questions["answer"]) if d.pairs_gold_chosen else None, d.pairs_min_pass_rate,
                                    greedy)
    counts.update(pair_counts, pairs_sampled_accuracy=round(float((scores >= 1.0).mean()), 4),
                  pairs_seconds=round(time.time() - started, 1))
    logger.warning("DPO pairs: %d pairs from %d of %d questions (%d with no correct answer, %d with no wrong one, "
                   "%d rarely correct, %d answered right greedily, %d with no answer), sampled accuracy %.1f%%, in "
                   "%.0f s", counts["pairs"], counts["pairs_questions_used"], len(answers), counts["pairs_no_correct"],
                   counts["pairs_no_wrong"], counts["pairs_rarely_correct"], counts["pairs_greedy_right"],
                   counts["pairs_no_answer"], 100 * counts["pairs_sampled_accuracy"], counts["pairs_seconds"])
    if not pairs:
        raise DataError(f"training.dpo.pairs verifier: none of the {len(answers)} questions gave both a correct and a "
                        f"wrong answer in {d.pairs_samples} samples ({counts['pairs_no_correct']} had no correct "
                        f"one, {counts['pairs_no_wrong']} no wrong one); start from an adapter that answers some "
                        "right, or raise pairs_samples or pairs_temperature")
    prompts, references = questions["prompt"], questions["reference_answer"]
    rows = {"prompt": [prompts[i] for i, _, _ in pairs],
            "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in pairs],
            "rejected": [[{"role": "assistant", "content": r}] for _, _, r in pairs],
            "reference_answer": [references[i] for i, _, _ in pairs]}
    return datasets.Dataset.from_dict(rows), counts


def pairs_from_adapter(spec: Any, processed: Any, tokenizer: Any, base_model: str, adapter_path: str | None
                       ) -> tuple[Any, dict[str, float]]:
    """Verifier-built pairs from a saved adapter (None: the base model), loaded for inference, split into train
    and held-out pairs by question (``training.dpo.validation_share``): the pairs step's and command's work."""
    from llm_trainer.inference import load_for_inference
    from llm_trainer.modeling import free_accelerator_memory

    from transformers import set_seed

    set_seed(spec.seed)  # the samples, and so the pairs, follow the seed
    model = load_for_inference(spec.model, base_model, adapter_path, tokenizer)
    try:
        pairs, counts = build_pairs(model, tokenizer, processed, spec)
    finally:
        del model
        free_accelerator_memory()
    return pair_splits(pairs, spec.training.dpo.validation_share), counts


def with_term_rows(pairs: Any, processed: Any, spec: Any) -> Any:
    """``pairs`` plus, when ``training.dpo.data_sft_weight`` asks for the SFT term, the processed train rows' chat
    ``messages`` as the TERM_ROWS split: a DPO run handed these pairs learns the term from the same rows as one that
    builds its pairs itself."""
    from llm_trainer.training.sft_term import TERM_ROWS

    train = processed["train"]
    if not spec.training.dpo.data_sft_weight or "messages" not in train.column_names:
        return pairs  # without messages the trainer says what is missing
    return type(pairs)({**pairs, TERM_ROWS: train.select_columns(["messages"])})


def pair_splits(pairs: Any, share: float) -> Any:
    """A DatasetDict of train and validation pairs: about ``share`` of the questions held out, by a stable hash of
    the prompt, so that the pairs of one question stay on one side (none held out when too few questions)."""
    import datasets

    unit = np.array([zlib.crc32(json.dumps(p, sort_keys=True).encode()) / 2**32 for p in pairs["prompt"]])
    held = unit < share
    if held.all() or not held.any():
        held[:] = False
    return datasets.DatasetDict({"train": pairs.select(np.flatnonzero(~held)),
                                 "validation": pairs.select(np.flatnonzero(held))})


def write_pairs_jsonl(parts: Any, path: Path) -> int:
    """Every pair of ``parts`` (Datasets of pairs, e.g. the train and held-out splits) as JSON lines in the
    preference processor's pairs_chat shape (``data.processor: preference`` reads them back), written to a staging
    file and renamed into place; the number of lines."""
    staging = path.with_name(f".{path.name}.tmp")
    written = 0
    with open(staging, "w", encoding="utf-8") as out:
        for part in parts:
            for row in part.select_columns(list(PAIR_COLUMNS)):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    staging.replace(path)
    return written
