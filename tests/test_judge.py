"""The optional LLM judge: its mechanics offline, with the tiny model as the judge."""

from __future__ import annotations

import pytest
import torch

from llm_trainer.config import JudgeConfig


@pytest.fixture(scope="module")
def tiny(tiny_fp32):
    cfg = tiny_fp32.cfg.model_copy(update={"evaluation": tiny_fp32.cfg.evaluation.model_copy(
        update={"judge": JudgeConfig(model="tiny-llama", load_in_4bit=False)})})
    return cfg, tiny_fp32.model, tiny_fp32.tokenizer, tiny_fp32.processed


def test_verdict_is_the_larger_of_the_yes_and_no_next_token_probabilities(tiny):
    from llm_trainer.evaluation.judge import judge, judge_prompt, verdict_token_ids
    from llm_trainer.inference import encode_prompts

    _, model, tokenizer, _ = tiny
    items = [("What is 2 + 2?", "4", "4"), ("Name the capital of France.", "Paris", "Lyon"),
             ("Is 7 prime?", "Yes", "no")]
    positions = []  # the output layer makes logits for the last position only, not the whole prompt
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: positions.append(out.shape[1]))
    try:
        verdicts = judge(model, tokenizer, items, batch_size=2)
    finally:
        hook.remove()
    assert positions == [1, 1]
    yes_ids, no_ids = verdict_token_ids(tokenizer)
    assert not set(yes_ids) & set(no_ids)
    for item, verdict in zip(items, verdicts):  # recompute each verdict alone, unbatched
        assert verdict["judge_prompt"] == judge_prompt(*item) and item[1] in verdict["judge_prompt"]
        (ids,), _ = encode_prompts(tokenizer, [[{"role": "user", "content": judge_prompt(*item)}]], 10_000)
        with torch.no_grad():
            probabilities = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        p_yes, p_no = float(probabilities[yes_ids].sum()), float(probabilities[no_ids].sum())
        assert verdict["judge_verdict"] is (p_yes > p_no)
        assert verdict["judge_p_yes"] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)


def test_evaluator_with_a_judge_stores_prompts_and_verdicts_and_reports_agreement(tiny, monkeypatch):
    from llm_trainer.evaluation import build_evaluator
    from llm_trainer.evaluation import reasoning

    cfg, model, tokenizer, processed = tiny
    cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_samples": 6,
                                                                                  "max_new_tokens": 8})})
    test = processed["test"].select(range(6))
    long_reference = " ".join(["the answer follows from the definitions"] * 5)
    test = test.map(lambda row, i: {"reference_answer": long_reference if i == 0 else row["reference_answer"]},
                    with_indices=True)
    monkeypatch.setattr(reasoning.ReasoningEvaluator, "loss_metrics", lambda *a: {})
    result = build_evaluator(cfg).evaluate(model, tokenizer, test, None)
    judged = [e for e in result.examples if e["scored"]]
    assert result.metrics["judged"] == len(judged) > 1
    assert all(e["judge_prompt"] and e["judge_verdict"] in (True, False) for e in judged)
    long_row = result.examples[0]
    assert long_row["answer_type"] == "long" and long_row["judge"] == "llm_judge"
    assert long_row["correct"] is long_row["judge_verdict"]  # the judge decides long references
    assert result.metrics["judge_accuracy_long"] == float(long_row["judge_verdict"])
    ruled = [e for e in judged if e["answer_type"] != "long"]
    agreement = sum(e["judge_verdict"] == e["correct"] for e in ruled) / len(ruled)
    assert result.metrics["judge_agreement"] == pytest.approx(agreement)
