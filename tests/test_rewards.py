"""GRPO's rewards and settings without training: the real judge, reward hacking, bounded cost, and every setting a
user sets reaching the trainer (or refused in one line)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRPO_QUICKSTART = ROOT / "configs" / "grpo_quickstart.yaml"


def grpo_config(*overrides: str):
    from llm_trainer.config import load_config

    return load_config(GRPO_QUICKSTART, ["training.grpo.rewards={answer_correct: 1.0, format: 0.2}", *overrides])


def correct_reward(*overrides: str):
    from llm_trainer.training.rewards import build_rewards

    functions, _ = build_rewards(grpo_config(*overrides).train_spec())
    return next(f for f in functions if f.__name__ == "answer_correct")


def rewards_for(reward, pairs: list[tuple[str, str]]) -> list[float]:
    texts = [text for text, _ in pairs]
    return reward(prompts=[""] * len(texts), completions=texts, completion_ids=[[0]] * len(texts),
                  reference_answer=[reference for _, reference in pairs])


def test_the_reward_is_the_evaluations_judge_symbolic_and_strict():
    reward = correct_reward()
    pairs = [("So x = 2\\sqrt{2}.\nFinal answer: $2\\sqrt{2}$", "\\sqrt{8}"),  # math-verify, not text equality
             ("Half of it.\nFinal answer: 1/2", "0.5"),
             ("Final answer: $2\\sqrt{3}$", "\\sqrt{8}"),  # near misses
             ("Final answer: 0.51", "0.5"),
             ("Final answer: 5/10", "1/2")]
    assert rewards_for(reward, pairs) == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_only_the_last_final_answer_counts_and_a_hedge_scores_zero():
    reward = correct_reward()
    pairs = [("Final answer: 3\nWait, recheck: 2 + 2 = 4.\nFinal answer: 4", "4"),  # several different answers
             ("Final answer: 4\nFinal answer: 3", "4"),
             ("Final answer: 3 or 4", "4"),  # two numbers on one line
             ("The final answer is derived below.\n2 + 2 = 4\nFinal answer: 4", "4"),  # a mention is no answer
             ("Final answer: 4\nSo again:\nFinal answer: 4.", "4"),  # the same answer twice is one answer
             ("Final answer: 2 or 3", "x = 2 or x = 3")]  # both roots asked for: not a hedge
    assert rewards_for(reward, pairs) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_pathological_answers_are_refused_before_math_verify_cheaply_and_counted():
    from llm_trainer.evaluation.math_verifier import too_complex

    tower, parentheses = "10^{10^{10^{10}}}", "(" * 400 + "1" + ")" * 400
    superscripts = "2" + "^{2" * 50 + "}" * 50
    reward = correct_reward()
    started = time.monotonic()
    values = rewards_for(reward, [(f"Final answer: {p}", "5") for p in (tower, parentheses, superscripts)])
    assert time.monotonic() - started < 3.0  # each used to wait out the verify timeout: 21 s for the three
    assert values == [0.0, 0.0, 0.0] and reward.reward.unverifiable == 3
    assert [too_complex(a) for a in ("9^{9^{9}}", "7^{123456}", "2^{3^2}", "x^{2} + (a(b(c)))", "e^{i\\pi}")] == [
        True, True, False, False, False]


def test_the_rewards_scoring_settings_come_from_the_evaluation_section_and_key_the_run():
    from llm_trainer.training.run import run_folder

    strict, tolerant = grpo_config(), grpo_config("evaluation.numeric_tolerance=0.01")
    assert strict.train_spec().scoring.numeric_tolerance == 0.0
    assert tolerant.train_spec().scoring.numeric_tolerance == 0.01
    assert run_folder(strict.train_spec(), "data") != run_folder(tolerant.train_spec(), "data")
    pair = [("Final answer: 3.33", "10/3")]
    assert rewards_for(correct_reward(), pair) == [0.0]
    assert rewards_for(correct_reward("evaluation.numeric_tolerance=0.01"), pair) == [1.0]


def test_sft_runs_do_not_carry_scoring_so_evaluation_edits_do_not_retrain(make_config):
    from llm_trainer.training.run import run_folder

    a, b = make_config(), make_config(evaluation={"numeric_tolerance": 0.05, "short_answer_max_words": 5})
    assert a.train_spec().scoring is None and a.train_spec() == b.train_spec()
    assert run_folder(a.train_spec(), "data") == run_folder(b.train_spec(), "data")


def test_rows_with_long_references_are_left_out_of_grpo_by_the_evaluations_word_limit():
    import datasets

    from llm_trainer.training.grpo import verifiable_prompts

    long_reference = " ".join(["the", "sum", "of", "the", "two", "angles", "is", "always", "ninety", "degrees"] * 3)
    references = ["4", "x = 3", long_reference, "The derivative is 2x + 1 for every real x", ""]
    rows = datasets.Dataset.from_dict({
        "messages": [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]
                     for i in range(len(references))],
        "reference_answer": references})
    prompts, counts = verifiable_prompts(rows, grpo_config().train_spec())
    assert list(prompts["reference_answer"]) == references[:2] + [references[3]]
    assert counts == {"grpo_rows": 3, "grpo_rows_without_verifiable_reference": 2}
    assert prompts[0]["prompt"] == [{"role": "user", "content": "q0"}]  # the turns before the answer
    prompts, counts = verifiable_prompts(rows, grpo_config("evaluation.short_answer_max_words=5").train_spec())
    assert list(prompts["reference_answer"]) == references[:2] and counts["grpo_rows"] == 2


def test_grpo_reads_the_shared_training_keys(tmp_path):
    from llm_trainer.training.grpo import GrpoTrainer

    cfg = grpo_config("training.learning_rate=5e-4", "training.max_steps=7", "training.per_device_train_batch_size=8",
                      "training.gradient_accumulation_steps=2", "training.grpo.num_generations=4")
    arguments = GrpoTrainer(cfg.train_spec())._grpo_arguments(tmp_path, [1.0, 0.2])
    assert (arguments.learning_rate, arguments.max_steps, arguments.per_device_train_batch_size,
            arguments.gradient_accumulation_steps, arguments.num_generations) == (5e-4, 7, 8, 2, 4)
    assert (arguments.seed, arguments.save_steps, arguments.optim) == (cfg.seed, cfg.training.save_steps, "adamw_torch")


@pytest.mark.parametrize("override, message", [
    ("training.grpo.learning_rate=1e-5", "training.grpo: learning_rate: set training.learning_rate instead"),
    ("training.grpo.max_steps=10", "training.grpo: max_steps: set training.max_steps instead"),
    ("training.eval_steps=5", "training.eval_steps: not read by trainer grpo"),
    ("training.chunked_loss=true", "training.chunked_loss: not read by trainer grpo"),
    ("training.distributed.fsdp=true", "training.distributed.fsdp: not read by trainer grpo"),
    ("training.per_device_train_batch_size=18", r"\(36 completions\) must be a multiple of grpo.num_generations \(8\)"),
])
def test_keys_grpo_would_ignore_are_refused_in_one_line(override, message):
    from llm_trainer.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as error:
        grpo_config(override)
    assert "\n" not in str(error.value)


def test_a_grpo_section_under_the_sft_trainer_is_refused(make_config):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="training.grpo is read by trainer grpo only"):
        make_config(training={"grpo": {"beta": 0.1}})


def test_the_variance_filter_keeps_only_prompts_whose_answers_score_differently(monkeypatch):
    import datasets

    from llm_trainer.errors import DataError
    from llm_trainer.inference import Generation
    from llm_trainer.training import reward_variance

    prompts = datasets.Dataset.from_dict({
        "prompt": [[{"role": "user", "content": q}] for q in ("always right", "sometimes", "never", "format only")],
        "reference_answer": ["4", "7", "9", "5"]})
    answers = {"always right": ["Final answer: 4"] * 3, "sometimes": ["Final answer: 7", "Final answer: 1", "x"],
               "never": ["Final answer: 1"] * 3, "format only": ["Final answer: 6", "Final answer: 8", "Final answer: 2"]}
    seen = {}

    def fake_generate(model, tokenizer, conversations, max_new_tokens, batch_size, sampling=None):
        seen.update(sampling=sampling, asked=len(conversations), budget=max_new_tokens)
        counter: dict[str, int] = {}
        out = []
        for conversation in conversations:
            question = conversation[-1]["content"]
            index = counter[question] = counter.get(question, -1) + 1
            out.append(Generation(answers[question][index], 5))
        return out

    class Model:
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    monkeypatch.setattr(reward_variance, "generate_batch", fake_generate)
    cfg = grpo_config("training.grpo.variance_filter_samples=3").train_spec()
    model = Model()
    kept, counts = reward_variance.prompts_with_reward_variance(model, None, prompts, cfg)
    # answer_correct 1.0 + format 0.2: "sometimes" varies in both; "format only" is always formatted and wrong
    assert [p[0]["content"] for p in kept["prompt"]] == ["sometimes"]
    assert (counts["grpo_variance_filter_examined"], counts["grpo_variance_filter_kept"],
            counts["grpo_variance_filter_constant"]) == (4, 1, 3)
    assert seen == {"sampling": {"do_sample": True, "temperature": 0.5, "top_p": 1.0, "top_k": 0}, "asked": 12,
                    "budget": cfg.training.grpo.max_completion_length}  # sampled as the quickstart's GRPO samples
    assert model.training is True  # back in training mode for GRPO
    # "sometimes" averages (1.2 + 0.2 + 0) / 3 = 0.47: under a minimum mean reward of 0.5 it is left out, and counted
    strict = grpo_config("training.grpo.variance_filter_samples=3",
                         "training.grpo.variance_filter_min_mean_reward=0.5").train_spec()
    with pytest.raises(DataError, match=r"of the 1 prompts whose answers' rewards vary, 1 have a mean reward under "
                                        r"variance_filter_min_mean_reward \(0.5\) and 0 a greedy answer"):
        reward_variance.prompts_with_reward_variance(model, None, prompts, strict)
    answers["sometimes"] = ["Final answer: 7", "Final answer: 7", "x"]  # (1.2 + 1.2 + 0) / 3 = 0.8
    kept, counts = reward_variance.prompts_with_reward_variance(model, None, prompts, strict)
    assert len(kept) == 1 and counts["grpo_variance_filter_below_min_mean_reward"] == 0
    # variance_filter_greedy_wrong: the fake's greedy answer is a prompt's first one; right here, so nothing to change
    greedy = grpo_config("training.grpo.variance_filter_samples=3",
                         "training.grpo.variance_filter_greedy_wrong=true").train_spec()
    with pytest.raises(DataError, match="0 have a mean reward under .* and 1 a greedy answer as good as the best"):
        reward_variance.prompts_with_reward_variance(model, None, prompts, greedy)
    # one greedy answer, asked only of the prompt whose answers vary (the others' greedy answers decide nothing)
    assert seen["sampling"] == {"do_sample": False} and seen["asked"] == 1
    answers["sometimes"] = ["Final answer: 1", "Final answer: 7", "x"]  # greedy wrong, a sample right: kept
    kept, counts = reward_variance.prompts_with_reward_variance(model, None, prompts, greedy)
    assert [p[0]["content"] for p in kept["prompt"]] == ["sometimes"]
    assert (counts["grpo_variance_filter_kept"], counts["grpo_variance_filter_greedy_best"]) == (1, 0)
    answers["sometimes"] = ["Final answer: 1"] * 3
    with pytest.raises(DataError, match="all 3 sampled answers were the same for each of the 4 prompts"):
        reward_variance.prompts_with_reward_variance(model, None, prompts, cfg)
    with pytest.raises(Exception, match="one answer per prompt cannot vary"):
        grpo_config("training.grpo.variance_filter_samples=1")
