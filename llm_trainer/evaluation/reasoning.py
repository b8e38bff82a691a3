"""ReasoningEvaluator: greedy answers to the test questions, read out of the solutions and judged against the
references by answer type; optionally an LLM judge and lm-eval-harness benchmarks on the same model."""

from __future__ import annotations

import re
from typing import Any

from llm_trainer.config import EvaluationConfig
from llm_trainer.evaluation.answer_types import VERIFIABLE
from llm_trainer.evaluation.answer_types import metric_names as reasoning_metric_names
from llm_trainer.evaluation.base import BaseEvaluator, EvalResult
from llm_trainer.evaluation.scoring import ScoringSettings, aggregate, score_many


class ReasoningEvaluator(BaseEvaluator):
    """``evaluation.evaluator: reasoning``: final answers judged correct or wrong, long ones by overlap."""

    metric_names = reasoning_metric_names()
    metric_families = ("accuracy_task_<family>",)  # per_task_metrics, where the data has a task column

    @classmethod
    def metric_names_for(cls, evaluation: EvaluationConfig) -> tuple[str, ...]:
        """The fixed metric names, with the judge's when ``evaluation.judge`` is set."""
        return reasoning_metric_names(judge=evaluation.judge is not None)  # the judge's metrics with a judge

    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        """Accuracy by answer type and task, judge and benchmark metrics, speed and the loss."""
        cfg = self.cfg.evaluation
        answers = self.answer_test_questions(model, tokenizer, processed_test)
        rows, prompts, generations = answers.rows, answers.prompts, answers.generations
        settings = ScoringSettings.from_config(cfg)
        scores = score_many([g.text for g in generations], list(rows["reference_answer"]), settings)
        examples = [{"row_id": row_id, "system_prompt": _system(prompt), "question": question, "reference": reference,
                     "generation": generation.text, **result}
                    for row_id, prompt, question, reference, generation, result in zip(
                        rows["row_id"], prompts, rows["question"], rows["reference_answer"], generations, scores)]
        tasks = list(rows["task"]) if "task" in rows.column_names else [""] * len(examples)
        for example, task in zip(examples, tasks):
            example["task"] = task or ""
        metrics: dict[str, Any] = {**aggregate(scores), **per_task_metrics(examples)}
        if cfg.judge is not None:
            metrics.update(self._judge(tokenizer, examples))
        metrics.update({
            "examples": len(examples),
            "scored": sum(bool(e["scored"]) for e in examples),
            "no_reference": sum(not e["scored"] for e in examples),
            **answers.speed(),
            **self.loss_metrics(model, tokenizer, tokenized_test),
        })
        if cfg.benchmarks:
            from llm_trainer.evaluation.benchmarks import run_benchmarks

            metrics.update(run_benchmarks(model, tokenizer, cfg.benchmarks, limit=cfg.benchmark_limit,
                                          include_path=cfg.benchmark_include_path, batch_size=cfg.batch_size,
                                          max_new_tokens=cfg.max_new_tokens))
        return EvalResult(metrics=metrics, examples=examples)

    def _judge(self, tokenizer: Any, examples: list[dict[str, Any]]) -> dict[str, float]:
        """Judge every scored example: the judge decides long references; on the others it is compared with
        the rules (agreement)."""
        from llm_trainer.evaluation.judge import judge, load_judge
        from llm_trainer.modeling import free_accelerator_memory

        judge_cfg = self.cfg.evaluation.judge
        judge_model, judge_tokenizer = load_judge(self.cfg.model, judge_cfg, tokenizer, self.cfg.seed,
                                                   self.base_model)
        scored = [e for e in examples if e["scored"]]
        items = [(e["question"], e["reference"], e["generation"] if e["extraction_failed"] else e["extracted"])
                 for e in scored]
        verdicts = judge(judge_model, judge_tokenizer, items, judge_cfg.batch_size)
        del judge_model
        free_accelerator_memory()
        for example in examples:
            example.update(judge_prompt="", judge_verdict=None, judge_p_yes=None)
        for example, verdict in zip(scored, verdicts):
            example.update(verdict)
            if example["answer_type"] == "long":
                example.update(correct=verdict["judge_verdict"], judge="llm_judge")
        long_rows = [e for e in scored if e["answer_type"] == "long"]
        ruled = [e for e in scored if e["answer_type"] != "long"]
        return {
            "judged": len(scored),
            "judge_accuracy_long": sum(e["judge_verdict"] for e in long_rows) / len(long_rows) if long_rows else 0.0,
            "judge_agreement": (sum(e["judge_verdict"] == e["correct"] for e in ruled) / len(ruled)) if ruled else 0.0,
        }


def task_key(task: str) -> str:
    """A task family as it appears in metric names: accuracy_task_<key>."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", task.strip()).strip("_").lower()


def per_task_metrics(examples: list[dict[str, Any]]) -> dict[str, float]:
    """accuracy_task_<family> and count_task_<family> over the verifiable examples of each task family (examples
    without a family are left out); nothing when no example names one."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for example in examples:
        key = task_key(example.get("task") or "")
        if key and example["answer_type"] in VERIFIABLE:
            by_task.setdefault(key, []).append(example)
    metrics: dict[str, float] = {}
    for key in sorted(by_task):
        rows = by_task[key]
        metrics[f"accuracy_task_{key}"] = sum(bool(e["correct"]) for e in rows) / len(rows)
        metrics[f"count_task_{key}"] = len(rows)
    return metrics


def _system(conversation: list[dict[str, str]]) -> str:
    return next((turn["content"] for turn in conversation if turn["role"] == "system"), "")
