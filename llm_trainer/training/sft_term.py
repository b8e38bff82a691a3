"""The SFT term: the next-token loss of the data's own answers, added to an on-policy trainer's loss.

On-policy training learns only from the prompts it samples, and a prompt teaches GRPO nothing when all its answers
score the same; SFT learns from every row. InstructGPT's PPO-ptx mixes the two: each step's RL loss plus a weighted
language-model loss on a batch of data. Here that batch is ``batch_size`` train rows, tokenized as SFT tokenizes
them (the chat template, the prompt masked, the answer cut at ``data.max_seq_length``; a row whose prompt alone
fills it is left out), drawn in a seeded order that goes through every row before repeating.
The draw follows the number of batches taken so far, so a resumed run takes the same rows as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_trainer.data.collate import PaddedCollator
from llm_trainer.data.tokenization import tokenize_batch
from llm_trainer.errors import DataError

# The split of the pipeline's verifier-built pairs (the build_pairs step's artifact) that carries the questions' own
# answers for the term: the train step gets the pairs in place of the processed rows.
TERM_ROWS = "sft_term_rows"


class SftTerm:
    """``weight`` x the mean next-token loss of a batch of the train rows' answers (``messages``: the chat turns,
    the last one the answer)."""

    def __init__(self, messages: list[list[dict]], tokenizer: Any, max_seq_length: int, batch_size: int,
                 weight: float, seed: int):
        tokenized = tokenize_batch({"messages": messages}, tokenizer, max_seq_length, truncate=True)
        self.rows = [{"input_ids": ids, "labels": labels} for ids, labels, n, prompt in
                     zip(tokenized["input_ids"], tokenized["labels"], tokenized["label_tokens"],
                         tokenized["prompt_length"]) if n > 0 and prompt < max_seq_length]
        if not self.rows:
            raise DataError(f"data_sft_weight: none of the {len(messages)} train rows has an answer token "
                            f"left within data.max_seq_length ({max_seq_length}) to learn from")
        self.batch_size, self.weight, self.seed = min(batch_size, len(self.rows)), weight, seed
        self.collate = PaddedCollator(tokenizer.pad_token_id)

    def rows_of_draw(self, draw: int) -> list[int]:
        """The row indices of batch number ``draw``: consecutive slices of a per-pass permutation of every row."""
        per_pass = len(self.rows) // self.batch_size
        epoch, index = divmod(draw, per_pass)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return order[index * self.batch_size:(index + 1) * self.batch_size].tolist()

    def loss(self, model: Any, draw: int) -> Any:
        """The (unweighted) mean next-token loss of batch ``draw``'s answer tokens under ``model``."""
        batch = self.collate([self.rows[i] for i in self.rows_of_draw(draw)])
        device = next(model.parameters()).device
        return model(**{key: value.to(device) for key, value in batch.items()}).loss


class SftTermMixin:
    """For a TRL trainer: its loss plus the SFT term (``sft_term``) on the next batch of train rows, each micro-batch,
    scaled for gradient accumulation as the trainer's own loss is, and logged as ``data_sft_loss``."""

    sft_term: SftTerm | None = None
    _sft_draws: int | None = None

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
                     ) -> Any:
        """The trainer's loss, plus the SFT term while training."""
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        if self.sft_term is None or not model.training or return_outputs:
            return loss
        if self._sft_draws is None:  # after a resume, the batches an uninterrupted run would take next
            self._sft_draws = self.state.global_step * self.args.gradient_accumulation_steps  # type: ignore[attr-defined]
        sft = self.sft_term.loss(model, self._sft_draws)
        self._sft_draws += 1
        self._metrics["train"]["data_sft_loss"].append(sft.item())  # type: ignore[attr-defined]
        # GRPO's loss comes scaled for gradient accumulation (TRL's loss_is_scaled_for_ga); DPO's is scaled after
        scale = self.current_gradient_accumulation_steps if self.loss_is_scaled_for_ga else 1  # type: ignore[attr-defined]
        return loss + self.sft_term.weight * sft / scale


def data_sft_term(processed: Any, tokenizer: Any, cfg: Any, weight: float, batch_size: int) -> SftTerm | None:
    """The SFT term over every train row of ``processed`` (chat ``messages``, the last turn the answer), or over its
    TERM_ROWS split where it has one (pairs built in a step of their own); None when ``weight`` is 0."""
    from llm_trainer.errors import ConfigError

    if not weight:
        return None
    split = processed.get(TERM_ROWS, processed["train"]) if hasattr(processed, "keys") else processed
    if "messages" not in split.column_names:
        raise ConfigError("data_sft_weight: the SFT term learns the train rows' own answers (chat messages), but these "
                          f"rows have none (columns: {', '.join(split.column_names)}); set it to 0")
    return SftTerm(list(split["messages"]), tokenizer, cfg.data.max_seq_length, batch_size, weight, cfg.seed)
