"""Reference answer types as natural_reasoning's card counts them, and the metric names the evaluator produces.

Pure Python and cheap to import: the reasoning evaluator declares its metrics with ``metric_names``, which the
config validator reads before anything heavy runs.
"""

from __future__ import annotations

import re

NONE, SINGLE_WORD, SHORT, LONG = "none", "single_word", "short", "long"
ANSWER_TYPES = (NONE, SINGLE_WORD, SHORT, LONG)
VERIFIABLE = (SINGLE_WORD, SHORT)  # judged correct or wrong; long ones get overlap scores (or the LLM judge)
MATH_SPAN = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|\$.+?\$", re.DOTALL)

# Means over the verifiable references, over long ones, and counts over the whole table.
VERIFIABLE_METRICS = ("accuracy", "exact_match", "numeric_match", "math_match", "token_f1")
LONG_METRICS = ("token_f1_long", "rouge_l_long")
TABLE_METRICS = ("extraction_failed", "verify_timeout", "examples", "scored", "no_reference",
                 "generated_tokens", "generation_tokens_per_second", "hit_token_cap")
LOSS_METRICS = ("eval_loss", "perplexity", "loss_tokens")
JUDGE_METRICS = ("judge_accuracy_long", "judge_agreement", "judged")
LOWER_IS_BETTER = frozenset({"eval_loss", "perplexity", "extraction_failed", "verify_timeout", "hit_token_cap"})


def answer_type(reference: str | None, short_max_words: int = 20) -> str:
    """none, single_word, short (up to ``short_max_words`` words; a math span counts as one) or long."""
    text = (reference or "").strip()
    if not text:
        return NONE
    count = len(MATH_SPAN.sub(" M ", text).split())
    if count <= 1:
        return SINGLE_WORD
    return SHORT if count <= short_max_words else LONG


def metric_names(judge: bool = False) -> tuple[str, ...]:
    """Every metric name the reasoning evaluator can produce (per-type names included)."""
    per_type = [f"accuracy_{kind}" for kind in VERIFIABLE] + [f"count_{kind}" for kind in ANSWER_TYPES]
    judged = JUDGE_METRICS if judge else ()
    return (*VERIFIABLE_METRICS, *per_type, *LONG_METRICS, *TABLE_METRICS, *LOSS_METRICS, *judged)
