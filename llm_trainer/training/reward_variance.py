"""Keep the GRPO prompts that can teach: those whose sampled answers do not all get the same reward.

GRPO learns from the differences between the answers to one prompt. A prompt the starting model always answers
right, or never does, gives every answer of its group the same reward and so no gradient, while its completions
still cost a generation and a forward and backward pass. ``training.grpo.variance_filter_samples`` answers each
candidate prompt that many times with the starting adapter (sampled as GRPO samples), scores the answers with the
configured rewards, and keeps the prompts whose total reward varies. ``variance_filter_min_mean_reward`` also leaves
out the prompts whose answers' mean reward is under it: those the model answers right only by a rare lucky sample,
whose one right answer GRPO would push hard (online difficulty filtering: a band of pass rates that teaches).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from llm_trainer.errors import DataError
from llm_trainer.inference import decoding, generate_batch

logger = logging.getLogger(__name__)
GENERATION_BATCH = 64  # answers generated at once; the prompts are short and the completions capped


def sample_answers(model: Any, tokenizer: Any, prompts: Any, k: int, max_new_tokens: int, temperature: float
                   ) -> tuple[list, list[str], list[Any]]:
    """``k`` sampled answers to each of ``prompts`` (TRL's prompt rows: ``prompt``, ``reference_answer``), with the
    model in eval mode meanwhile: the conversations and references, each repeated ``k`` times, and the answers."""
    conversations = [prompt for prompt in prompts["prompt"] for _ in range(k)]
    references = [reference for reference in prompts["reference_answer"] for _ in range(k)]
    was_training = model.training
    model.eval()
    try:
        answers = generate_batch(model, tokenizer, conversations, max_new_tokens, GENERATION_BATCH,
                                 sampling=decoding(temperature))
    finally:
        model.train(was_training)
    return conversations, references, answers


def prompts_with_reward_variance(model: Any, tokenizer: Any, prompts: Any, cfg: Any) -> tuple[Any, dict[str, float]]:
    """The prompts (TRL's prompt data set) whose answers' weighted reward varies over
    ``variance_filter_samples`` samples each, at most ``variance_filter_max_prompts`` of them examined (drawn by
    the seed), less those under ``variance_filter_min_mean_reward`` and, with ``variance_filter_greedy_wrong``,
    those whose greedy answer already scores as well as the best sample; and the counts of each."""
    from llm_trainer.training.rewards import build_rewards

    g = cfg.training.grpo
    started = time.time()
    examined = prompts.shuffle(seed=cfg.seed)
    if g.variance_filter_max_prompts is not None:
        examined = examined.select(range(min(g.variance_filter_max_prompts, len(examined))))
    k = g.variance_filter_samples
    functions, weights = build_rewards(cfg)  # fresh counters: the run's reward statistics stay the training's own

    def rewards(rows: Any, samples: int, temperature: float) -> np.ndarray:
        conversations, references, answers = sample_answers(model, tokenizer, rows, samples,
                                                            g.max_completion_length, temperature)
        total = np.zeros(len(answers))
        for function, weight in zip(functions, weights):
            total += weight * np.asarray(function(prompts=conversations, completions=[a.text for a in answers],
                                                  completion_ids=[[0] * a.new_tokens for a in answers],
                                                  reference_answer=references))
        return total.reshape(len(rows), samples)

    by_prompt = rewards(examined, k, g.temperature)
    varies = by_prompt.max(axis=1) > by_prompt.min(axis=1)
    hard = varies & (by_prompt.mean(axis=1) < g.variance_filter_min_mean_reward)
    greedy_best = np.zeros(len(examined), dtype=bool)
    candidates = np.flatnonzero(varies & ~hard)
    if g.variance_filter_greedy_wrong and len(candidates):  # greedy answers only where they decide
        greedy = rewards(examined.select(candidates), 1, 0.0)[:, 0]
        greedy_best[candidates] = greedy >= by_prompt.max(axis=1)[candidates]
    keep = varies & ~hard & ~greedy_best
    best = max(weights) if weights else 0.0
    counts = {"grpo_variance_filter_examined": len(examined), "grpo_variance_filter_kept": int(keep.sum()),
              "grpo_variance_filter_constant": int((~varies).sum()),
              "grpo_variance_filter_below_min_mean_reward": int(hard.sum()),
              "grpo_variance_filter_greedy_best": int(greedy_best.sum()),
              "grpo_variance_filter_seconds": round(time.time() - started, 1),
              "grpo_variance_filter_mean_reward": round(float(by_prompt.mean()), 4) if by_prompt.size else 0.0}
    logger.warning("GRPO variance filter: %d of %d prompts kept, in %.0f s: left out %d whose %d sampled answers all "
                   "got the same reward (they would teach nothing), %d whose mean reward is under %g, and %d whose "
                   "greedy answer is already as good as the best sample", counts["grpo_variance_filter_kept"],
                   len(examined), counts["grpo_variance_filter_seconds"], counts["grpo_variance_filter_constant"], k,
                   counts["grpo_variance_filter_below_min_mean_reward"], g.variance_filter_min_mean_reward,
                   counts["grpo_variance_filter_greedy_best"])
    if not varies.any():
        raise DataError(f"training.grpo.variance_filter_samples: the rewards of all {k} sampled answers were the same "
                        f"for each of the {len(examined)} prompts examined (mean reward {by_prompt.mean():.2f} of at "
                        f"most {best:g}), so GRPO has nothing to learn from; start from an adapter that answers some of "
                        "them right, raise temperature, or set variance_filter_samples: 0")
    if not keep.any():
        raise DataError(f"training.grpo.variance_filter: of the {int(varies.sum())} prompts whose answers' rewards vary, "
                        f"{int(hard.sum())} have a mean reward under variance_filter_min_mean_reward "
                        f"({g.variance_filter_min_mean_reward:g}) and {int(greedy_best.sum())} a greedy answer as good "
                        "as the best sample (variance_filter_greedy_wrong), so none is left to train on; relax them")
    return examined.select(np.flatnonzero(keep)), counts
