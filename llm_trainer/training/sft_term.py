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
            raise DataError(f"training.grpo.sft_weight: none of the {len(messages)} train rows has an answer token "
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
