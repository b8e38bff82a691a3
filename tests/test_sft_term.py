"""The SFT term of GRPO and DPO (data_sft_weight): which rows each batch takes, that only answer tokens are learnt,
and that a GRPO run with it logs the term and lowers it."""

from __future__ import annotations

import pytest

ANSWERS = ["The last word is horse.\n\nFinal answer: horse", "7 is odd.\n\nFinal answer: odd",
           "Of 2 and 4, the larger is 4.\n\nFinal answer: 4"]


def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "Solve it."}, {"role": "user", "content": f"Question {i}?"},
             {"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]}] for i in range(n)]


def test_each_pass_takes_every_row_once_in_a_seeded_order(tiny_fp32):
    from llm_trainer.training.sft_term import SftTerm

    term = SftTerm(conversations(10), tiny_fp32.tokenizer, 256, batch_size=5, weight=1.0, seed=3)
    first_pass = term.rows_of_draw(0) + term.rows_of_draw(1)
    assert sorted(first_pass) == list(range(10))
    second_pass = term.rows_of_draw(2) + term.rows_of_draw(3)
    assert sorted(second_pass) == list(range(10)) and second_pass != first_pass  # a new order each pass
    assert term.rows_of_draw(2) == SftTerm(conversations(10), tiny_fp32.tokenizer, 256, 5, 1.0, 3).rows_of_draw(2)
    assert term.rows_of_draw(0) != SftTerm(conversations(10), tiny_fp32.tokenizer, 256, 5, 1.0, 4).rows_of_draw(0)
    uneven = SftTerm(conversations(7), tiny_fp32.tokenizer, 256, batch_size=3, weight=1.0, seed=3)
    assert len(set(uneven.rows_of_draw(0) + uneven.rows_of_draw(1))) == 6  # whole batches; the 7th waits a pass


def test_only_the_answer_tokens_are_learnt_and_rows_with_none_left_are_refused(tiny_fp32):
    import torch

    from llm_trainer.errors import DataError
    from llm_trainer.training.sft_term import SftTerm

    term = SftTerm(conversations(3), tiny_fp32.tokenizer, 256, batch_size=3, weight=1.0, seed=0)
    for row, answer in zip(term.rows, ANSWERS):
        learnt = [t for t in row["labels"] if t != -100]
        assert tiny_fp32.tokenizer.decode(learnt).startswith(answer)  # the answer (and the end of the turn) only
        assert row["labels"][:len(row["labels"]) - len(learnt)] == [-100] * (len(row["labels"]) - len(learnt))
    loss = term.loss(tiny_fp32.model, 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    with pytest.raises(DataError, match="data_sft_weight: none of the 2 train rows has an answer token left within"):
        SftTerm(conversations(2), tiny_fp32.tokenizer, 8, batch_size=2, weight=1.0, seed=0)


def test_the_term_is_added_scaled_for_accumulation_and_a_resumed_run_takes_the_next_draws(tiny_fp32):
    """compute_loss adds weight x the term to the trainer's own loss (divided by the accumulation steps where the
    trainer's loss comes scaled for them, as GRPO's does), logs it, and after a resume at step 3 of 2 micro-batches
    each starts at draw 6, the draw an uninterrupted run would take next."""
    from collections import defaultdict
    from types import SimpleNamespace

    import torch

    from llm_trainer.training.sft_term import SftTerm, SftTermMixin

    class Trainer:
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return torch.tensor(1.0)

    class WithTerm(SftTermMixin, Trainer):
        pass

    def trainer(scaled: bool, global_step: int) -> WithTerm:
        made = WithTerm()
        made.sft_term = SftTerm(conversations(12), tiny_fp32.tokenizer, 256, batch_size=2, weight=0.5, seed=1)
        made.state, made.args = SimpleNamespace(global_step=global_step), SimpleNamespace(gradient_accumulation_steps=2)
        made.loss_is_scaled_for_ga, made.current_gradient_accumulation_steps = scaled, 2
        made._metrics = {"train": defaultdict(list)}
        return made

    model, was_training = tiny_fp32.model, tiny_fp32.model.training
    model.train()  # the term is added while training only
    try:
        resumed = trainer(scaled=True, global_step=3)
        first, second = resumed.compute_loss(model, {}), resumed.compute_loss(model, {})
        term = resumed.sft_term
        with torch.no_grad():
            draw6, draw7, draw0 = (term.loss(model, draw).item() for draw in (6, 7, 0))
        unscaled = trainer(scaled=False, global_step=0)  # DPO: the trainer scales the summed loss itself
        dpo_like, evaluating = unscaled.compute_loss(model, {}), unscaled.compute_loss(model, {}, return_outputs=True)
        model.eval()
        in_eval = unscaled.compute_loss(model, {})
    finally:
        model.train(was_training)
    assert resumed._metrics["train"]["data_sft_loss"] == pytest.approx([draw6, draw7])
    assert first.item() == pytest.approx(1.0 + 0.5 * draw6 / 2)  # GRPO: the term divided by the 2 micro-batches
    assert second.item() == pytest.approx(1.0 + 0.5 * draw7 / 2)
    assert dpo_like.item() == pytest.approx(1.0 + 0.5 * draw0)
    assert evaluating.item() == 1.0 and in_eval.item() == 1.0  # the trainer's own loss alone


@pytest.mark.slow
def test_grpo_with_the_sft_term_logs_it_and_lowers_it(tmp_path):
    """Six GRPO steps from the base model with the format reward and the SFT term: the term is logged at every
    step, falls, and counts toward the loss; without it, no sft_loss is logged."""
    from helpers.quickstart import QUICKSTART, prepare_quickstart

    from llm_trainer.config import load_config
    from llm_trainer.training import run_training

    grpo_yaml = QUICKSTART.parent / "grpo_quickstart.yaml"
    _, _, processed, tokenizer = prepare_quickstart(["data.max_seq_length=256"])
    common = ["model.init_adapter=null", "data.max_seq_length=256", "training.logging_steps=1",
              "training.max_steps=6", "training.save_steps=100", "training.grpo.num_generations=4",
              "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=1",
              "training.grpo.max_completion_length=24", "training.grpo.variance_filter_samples=0",
              "training.grpo.rewards={format: 1.0}", "training.learning_rate=3e-3"]
    with_term = run_training(load_config(grpo_yaml, [*common, "training.grpo.data_sft_weight=1.0",
                                                     "training.grpo.data_sft_batch_size=16"]),
                             processed, tokenizer, tmp_path / "with")
    sft_loss = [h["data_sft_loss"] for h in with_term.history if "data_sft_loss" in h]
    assert len(sft_loss) == 6
    assert sum(sft_loss[-2:]) / 2 < sum(sft_loss[:2]) / 2, sft_loss
    assert with_term.metrics["last_data_sft_loss"] == pytest.approx(sft_loss[-1])
    without = run_training(load_config(grpo_yaml, [*common, "training.grpo.data_sft_weight=0"]), processed, tokenizer,
                           tmp_path / "without")
    assert not any("data_sft_loss" in h for h in without.history)
