"""ReasoningEvaluator: greedy answers to the test questions, extracted and scored against references."""

from __future__ import annotations

from typing import Any

from llm_trainer.evaluation.base import BaseEvaluator, EvalResult
from llm_trainer.evaluation.scoring import aggregate, score
from llm_trainer.inference import timed_generate


class ReasoningEvaluator(BaseEvaluator):
    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        cfg = self.cfg.evaluation
        rows = processed_test
        if cfg.max_samples is not None:
            rows = rows.select(range(min(cfg.max_samples, len(rows))))
        prompts = [messages[:-1] for messages in rows["messages"]]
        generations, seconds = timed_generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size,
                                              progress=True)
        examples, scores, unscored = [], [], 0
        for row, generation in zip(rows, generations):
            example = {"row_id": row["row_id"], "question": row["question"], "reference": row["reference_answer"],
                       "generation": generation.text}
            if row["reference_answer"].strip():
                result = score(generation.text, row["reference_answer"], cfg.numeric_tolerance)
                scores.append(result)
                example.update(result, scored=True)
            else:
                unscored += 1
                example.update(extracted="", exact_match=0.0, numeric_match=0.0, token_f1=0.0, correct=False,
                               scored=False)
            examples.append(example)
        generated = sum(g.new_tokens for g in generations)
        metrics = {
            **aggregate(scores),
            "examples": len(examples),
            "scored": len(scores),
            "no_reference": unscored,
            "generated_tokens": generated,
            "generation_tokens_per_second": round(generated / seconds, 1) if seconds else 0.0,
            **self.loss_metrics(model, tokenizer, tokenized_test),
        }
        metrics.pop("count", None)
        return EvalResult(metrics=metrics, examples=examples)
