"""ChatEvaluator: held-out conversations scored by loss and perplexity on every assistant turn of the test split
(the same masking as training), and by token F1 (and ROUGE-L) of a greedy reply to the last assistant turn's
context against that turn."""

from __future__ import annotations

from typing import Any

from llm_trainer.evaluation.base import BaseEvaluator, EvalResult
from llm_trainer.evaluation.text_metrics import normalize_answer, rouge_l, token_f1


class ChatEvaluator(BaseEvaluator):
    """``evaluation.evaluator: chat``: overlap of the reply with the reference (token F1, ROUGE-L)."""

    metric_names = ("token_f1", "rouge_l", "exact_match", "examples", "turns_in_context", "generated_tokens",
                    "generation_tokens_per_second", "hit_token_cap", "eval_loss", "perplexity", "loss_tokens")

    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        """Token F1, ROUGE-L and exact match of each reply against the reference turn, and the loss."""
        answers = self.answer_test_questions(model, tokenizer, processed_test)
        rows, prompts, generations = answers.rows, answers.prompts, answers.generations
        examples = []
        for row_id, prompt, reference, generation in zip(rows["row_id"], prompts, rows["reference_answer"],
                                                         generations):
            examples.append({
                "row_id": row_id, "question": prompt[-1]["content"] if prompt else "", "reference": reference,
                "generation": generation.text, "turns_in_context": len(prompt), "scored": True,
                "token_f1": token_f1(generation.text, reference), "rouge_l": rouge_l(generation.text, reference),
                "exact_match": normalize_answer(generation.text) == normalize_answer(reference),
            })
        count = max(len(examples), 1)
        metrics: dict[str, Any] = {
            "token_f1": sum(e["token_f1"] for e in examples) / count,
            "rouge_l": sum(e["rouge_l"] for e in examples) / count,
            "exact_match": sum(e["exact_match"] for e in examples) / count,
            "examples": len(examples),
            "turns_in_context": sum(e["turns_in_context"] for e in examples) / count,
            **answers.speed(),
            **self.loss_metrics(model, tokenizer, tokenized_test),
        }
        return EvalResult(metrics=metrics, examples=examples)
