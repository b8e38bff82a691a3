"""BaseEvaluator: score a model on the test split; the loss part is shared by every evaluator."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from llm_trainer.config import EvalSpec, EvaluationConfig, RunConfig
from llm_trainer.registry import EVALUATORS

logger = logging.getLogger(__name__)

CAPPED_WARNING_SHARE = 0.05  # above this share of answers cut at evaluation.max_new_tokens, evaluation warns
EVAL_LOSS_CHUNK_SIZE = 256  # labelled tokens per chunk of the evaluation loss (training.loss_chunk_size's default)


@dataclass
class EvalResult:
    """What an evaluator returns: the metrics, and one row per example for the report."""

    metrics: dict[str, float]
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Answers:
    """The model's answers to the test questions: the rows asked, their prompts, the generations and the time."""

    rows: Any
    prompts: list[Any]
    generations: list[Any]
    seconds: float

    def speed(self) -> dict[str, float]:
        """Generated tokens, generation speed and the share of answers cut at the token cap."""
        generated = sum(g.new_tokens for g in self.generations)
        return {"generated_tokens": generated,
                "generation_tokens_per_second": round(generated / self.seconds, 1) if self.seconds else 0.0,
                "hit_token_cap": round(self.capped() / len(self.generations), 4) if self.generations else 0.0}

    def capped(self) -> int:
        """How many answers used their whole token budget: cut off, not ended by the model."""
        return sum(1 for g in self.generations if g.max_new_tokens and g.new_tokens >= g.max_new_tokens)


class BaseEvaluator(ABC):
    """Base of the evaluators: a subclass scores the answers; generation and the loss are shared."""

    # What ``evaluate`` can return, which the config validator checks registry.promotion_metric and guard_metrics
    # against (through the EVALUATORS registry): every fixed metric name, and templates of the names that depend on
    # the data, where <family> (any <word>) stands for a key of lowercase letters, digits and _.
    metric_names: tuple[str, ...] = ()
    metric_families: tuple[str, ...] = ()  # e.g. accuracy_task_<family>: one metric per task family in the data

    @classmethod
    def metric_names_for(cls, evaluation: EvaluationConfig) -> tuple[str, ...]:
        """``metric_names`` as the evaluation settings make them (an evaluator whose options add metrics says so)."""
        return cls.metric_names

    def __init__(self, cfg: EvalSpec | RunConfig, base_model: str | None = None):
        self.cfg = cfg
        self.base_model = base_model  # the evaluated model's base (a tiny-llama judge reuses it)

    @abstractmethod
    def evaluate(self, model: Any, tokenizer: Any, processed_test: Any, tokenized_test: Any) -> EvalResult:
        """Metrics and per-example rows for ``model`` on the test split (processed rows and tokenized blocks)."""

    def answer_test_questions(self, model: Any, tokenizer: Any, processed_test: Any) -> Answers:
        """Greedy answers to the first ``evaluation.max_samples`` test rows, each asked with its own conversation
        up to the reference turn: the same prompt for every model evaluated."""
        from llm_trainer.inference import timed_generate

        cfg = self.cfg.evaluation
        rows = processed_test
        if cfg.max_samples is not None:
            rows = rows.select(range(min(cfg.max_samples, len(rows))))
        prompts = [messages[:-1] for messages in rows["messages"]]
        generations, seconds = timed_generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size,
                                              progress=True)
        answers = Answers(rows, prompts, generations, seconds)
        if answers.capped() > CAPPED_WARNING_SHARE * len(generations):
            logger.warning("evaluation.max_new_tokens: %d of %d answers (%.0f%%) stopped at the %d-token cap before "
                           "the model ended them; one cut before its final answer is scored wrong: raise "
                           "evaluation.max_new_tokens", answers.capped(), len(generations),
                           100 * answers.capped() / len(generations), cfg.max_new_tokens)
        return answers

    def loss_metrics(self, model: Any, tokenizer: Any, tokenized_test: Any) -> dict[str, float]:
        """Mean loss per label token over the whole test split, and its perplexity."""
        import torch

        from llm_trainer.data.collate import collator_for
        from llm_trainer.data.tokenization import IGNORE_INDEX

        from llm_trainer import losses

        if len(tokenized_test) == 0:
            return {}
        # The chunked loss: transformers' would hold [batch x tokens, vocabulary] logits in the compute dtype,
        # their fp32 copy and the log-softmax at once (over 40 GB at batch 16 x 2,048 with Llama 3's vocabulary).
        head = model.get_output_embeddings() if losses.supports_chunked_loss(model.config) else None
        collate = collator_for(self.cfg.data.packing, self.cfg.model.attn_implementation, tokenizer.pad_token_id)
        device = next(model.parameters()).device
        total_loss, total_tokens = 0.0, 0
        size = self.cfg.evaluation.batch_size
        with torch.no_grad():
            for start in range(0, len(tokenized_test), size):
                batch = collate([tokenized_test[i] for i in range(start, min(start + size, len(tokenized_test)))])
                batch = {k: v.to(device) for k, v in batch.items()}
                # No KV cache: with one, transformers would not build the packed-sample attention mask.
                if head is None:
                    loss = model(**batch, use_cache=False).loss
                else:
                    loss, _ = losses.model_loss_from_hidden(model, head, {**batch, "use_cache": False},
                                                            EVAL_LOSS_CHUNK_SIZE)
                tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total_loss += float(loss) * tokens
                total_tokens += tokens
        mean = total_loss / max(total_tokens, 1)
        return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "loss_tokens": total_tokens}


def build_evaluator(cfg: EvalSpec | RunConfig, base_model: str | None = None) -> BaseEvaluator:
    """The evaluator that ``evaluation.evaluator`` names, built for ``cfg``."""
    return EVALUATORS.resolve(cfg.evaluation.evaluator)(cfg, base_model)


def evaluate_model_on_test(cfg: EvalSpec | RunConfig, tokenizer: Any, base_model: str, adapter_path: Any,
                           processed_test: Any, tokenized_test: Any) -> EvalResult:
    """Load the base model (with the adapter, if any), evaluate it, and free its memory before returning: the
    local orchestrator runs train and both evaluations in one process, one model after the other."""
    from llm_trainer.inference import load_for_inference
    from llm_trainer.modeling import free_accelerator_memory

    model = load_for_inference(cfg.model, base_model, adapter_path, tokenizer)
    try:
        return build_evaluator(cfg, base_model).evaluate(model, tokenizer, processed_test, tokenized_test)
    finally:
        del model
        free_accelerator_memory()
