"""DPO on the tiny model, on CPU: pairs built by the verifier from the SFT adapter's own answers, only the LoRA
weights move, the reference is the starting adapter (no second base model), the reward margins are tracked, and a run
killed with -9 resumes on the same pairs and retraces the uninterrupted run.

Run as a script, this file is the resume test's training process:
    python tests/test_dpo.py RUN_DIR OUT_JSON KILL_AT_STEP SHARED_DIR BASE_MODEL OVERRIDE...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.quickstart import prepare_quickstart

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
DPO_QUICKSTART = ROOT / "configs" / "dpo_quickstart.yaml"
SFT_OVERRIDES = ["data.max_seq_length=256", "training.max_steps=30", "training.learning_rate=5e-3",
                 "training.eval_steps=100", "training.save_steps=100"]
DPO_STEPS = 10
DPO_OVERRIDES = ["data.max_seq_length=256", "training.logging_steps=1", "training.save_steps=5",
                 f"training.max_steps={DPO_STEPS}", "training.per_device_train_batch_size=4",
                 "training.learning_rate=2e-3", "training.dpo.pairs_max_questions=96",
                 "training.dpo.pairs_samples=4", "training.dpo.pairs_max_new_tokens=48",
                 "training.dpo.validation_share=0.2"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    """A 30-step SFT run of the quickstart, then 10 DPO steps of dpo_quickstart.yaml going on from its adapter, on
    pairs its own answers make, through run_training; records the tracked metrics."""
    from llm_trainer.config import load_config
    from llm_trainer.training import build_trainer, run_training

    folder = tmp_path_factory.mktemp("dpo")
    sft_cfg, processor, processed, tokenizer = prepare_quickstart(SFT_OVERRIDES)
    tokenized, _ = processor.tokenize(processed, tokenizer)
    sft = build_trainer(sft_cfg).train(tokenized, tokenizer, folder / "sft")
    overrides = [*DPO_OVERRIDES, f"model.init_adapter={sft.adapter.path}"]
    cfg = load_config(DPO_QUICKSTART, overrides)
    logged = []
    result = run_training(cfg, tokenized, tokenizer, folder / "dpo", keep_model=True, processed=processed,
                          on_metrics=lambda metrics, step: logged.append((step, metrics)))
    shared = folder / "shared"  # what the resume test's processes load instead of processing again
    processed.save_to_disk(str(shared / "processed"))
    tokenizer.save_pretrained(str(shared / "tokenizer"))
    return {"cfg": cfg, "overrides": overrides, "sft": sft, "result": result, "logged": logged, "shared": shared,
            "processed": processed, "tokenizer": tokenizer, "folder": folder}


def test_pairs_come_from_the_verifier_and_every_question_is_counted(dpo_run):
    m = dpo_run["result"].metrics
    assert m["pairs_questions"] == 96
    assert m["pairs_no_answer"] + m["pairs_no_correct"] + m["pairs_no_wrong"] + m["pairs_questions_used"] == 96
    assert 0 < m["pairs"] <= 2 * m["pairs_questions_used"]  # pairs_per_question 2
    assert m["dpo_train_pairs"] + m["dpo_held_out_pairs"] + m["dpo_pairs_too_long"] == m["pairs"]
    assert m["dpo_held_out_pairs"] > 0
    from datasets import load_from_disk
    from llm_trainer.evaluation.scoring import score

    rows = load_from_disk(str(dpo_run["folder"] / "dpo" / "pairs" / "rows" / "train"))
    for row in rows.select(range(min(20, len(rows)))):  # the verifier's verdicts, checked with the judge itself
        assert score(row["chosen"][0]["content"], row["reference_answer"])["correct"]
        assert not score(row["rejected"][0]["content"], row["reference_answer"])["correct"]
        assert row["chosen"] != row["rejected"]


def test_reward_margins_are_tracked_at_every_logging_step(dpo_run):
    steps = [(step, metrics) for step, metrics in dpo_run["logged"] if "loss" in metrics]
    assert [step for step, _ in steps] == list(range(1, DPO_STEPS + 1))
    for _, metrics in steps:
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "learning_rate"):
            assert np.isfinite(metrics[key]), key
    m = dpo_run["result"].metrics
    # The first step's policy is the reference: no margin yet; training opens one.
    assert m["first_rewards/margins"] == pytest.approx(0.0, abs=1e-3)
    assert m["last_rewards/margins"] > m["first_rewards/margins"]
    assert {"held_out_rewards/accuracies", "held_out_rewards/margins"} <= set(m)


def test_only_lora_weights_change_and_the_reference_is_the_starting_adapter(dpo_run):
    from safetensors.torch import load_file

    result, sft = dpo_run["result"], dpo_run["sft"]
    model = result.model
    # TRL's frozen reference is a second adapter on the same base, not a second model
    assert set(model.peft_config) == {"default", "ref"}
    before = load_file(str(sft.adapter.path / "adapter_model.safetensors"))
    after = load_file(str(result.adapter.path / "adapter_model.safetensors"))
    assert set(before) == set(after)  # the saved adapter is the trained one only, not the "ref" copy
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in before)
    compared = 0
    for name, parameter in model.named_parameters():
        if ".ref." in name:  # the reference stays the SFT adapter; peft saves keys without the adapter's name
            assert np.allclose(parameter.detach().float().numpy(), before[name.replace(".ref.", ".")].float().numpy())
            compared += 1
        if "lora_" not in name or ".ref." in name:
            assert not parameter.requires_grad, name
    assert compared == len(before)


def test_resume_after_sigkill_retraces_the_uninterrupted_run(dpo_run, tmp_path):
    """Killed at step 7 (checkpoint at 5), the re-run reuses the saved pairs, resumes at step 6 and logs the
    uninterrupted run's losses and margins for steps 6-10."""
    base_model = dpo_run["result"].adapter.base_model
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    run_dir = tmp_path / "run"

    def run(kill_at):
        return subprocess.run([sys.executable, __file__, str(run_dir), str(tmp_path / "out.json"), str(kill_at),
                               str(dpo_run["shared"]), base_model, *dpo_run["overrides"]],
                              capture_output=True, text=True, timeout=600, env=env)

    crashed = run(7)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-5"]
    pairs_written = (run_dir / "pairs" / "counts.json").stat().st_mtime
    resumed = run(0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "pairs" / "counts.json").stat().st_mtime == pairs_written  # not sampled again
    out = json.loads((tmp_path / "out.json").read_text())
    assert [step for step, metrics in out["logged"] if "loss" in metrics] == list(range(6, DPO_STEPS + 1))
    straight = dpo_run["result"].history
    for key in ("loss", "rewards/margins"):
        expected = {h["step"]: h[key] for h in straight if key in h and "loss" in h}
        got = {h["step"]: h[key] for h in out["history"] if key in h and "loss" in h}
        assert sorted(got) == sorted(expected) == list(range(1, DPO_STEPS + 1)), key
        for step, value in got.items():
            assert value == pytest.approx(expected[step], rel=1e-4, abs=1e-6), (key, step)


def test_make_pairs_counts_questions_by_outcome():
    from llm_trainer.training.pairs import make_pairs

    answers = [["Final answer: 4", "Final answer: 5", "Final answer: 4", "Final answer: 6"],  # 2 right, 2 wrong
               ["Final answer: 1", "Final answer: 1", "Final answer: 1", "Final answer: 1"],  # all right
               ["Final answer: 9", "Final answer: 8", "Final answer: 7", "Final answer: 7"],  # all wrong
               ["", "no idea", "  ", "maybe"]]  # no final answer at all
    scores = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    pairs, counts = make_pairs(answers, scores, per_question=2, seed=0)
    assert counts == {"pairs_questions": 4, "pairs_no_answer": 1, "pairs_no_correct": 1, "pairs_no_wrong": 1,
                      "pairs_gold_chosen": 0, "pairs_rarely_correct": 0, "pairs_greedy_right": 0, "pairs": 1, "pairs_questions_used": 1}  # two right, one text: one pair
    assert pairs[0][0] == 0 and pairs[0][1] == "Final answer: 4" and pairs[0][2] in ("Final answer: 5",
                                                                                    "Final answer: 6")
    pairs, counts = make_pairs([["Final answer: 4", "Final answer: 04", "Final answer: 5", "Final answer: 6"]],
                               np.array([[1, 1, 0, 0]], dtype=float), per_question=2, seed=0)
    assert counts["pairs"] == 2 and len({p[1] for p in pairs}) == 2 and len({p[2] for p in pairs}) == 2


def test_min_pass_rate_leaves_out_questions_answered_right_only_by_a_rare_sample():
    """pairs_min_pass_rate: a question with 1 right answer in 8 (a lucky sample) gives no pair at 0.25 and is counted;
    2 in 8 is enough; the other outcomes are counted as before."""
    from llm_trainer.training.pairs import make_pairs

    answers = [[f"Final answer: {n}" for n in (4, 5, 6, 7, 8, 9, 10, 11)],
               [f"Final answer: {n}" for n in (3, 3, 5, 6, 7, 8, 9, 10)],
               ["Final answer: 1"] * 8]
    scores = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0] * 8], dtype=float)
    pairs, counts = make_pairs(answers, scores, per_question=2, seed=0, min_pass_rate=0.25)
    assert {index for index, _, _ in pairs} == {1}
    assert (counts["pairs_rarely_correct"], counts["pairs_no_correct"], counts["pairs"]) == (1, 1, 1)
    pairs, counts = make_pairs(answers, scores, per_question=2, seed=0)
    assert {index for index, _, _ in pairs} == {0, 1} and counts["pairs_rarely_correct"] == 0


def test_greedy_wrong_pairs_reject_the_greedy_answer_and_skip_questions_it_gets_right():
    """pairs_greedy_wrong: the greedy answer (what evaluation reads) is the first one rejected where it is wrong; a
    question answered right greedily gives no pair and is counted."""
    from llm_trainer.training.pairs import make_pairs

    answers = [["Final answer: 4", "Final answer: 5", "Final answer: 4", "Final answer: 6"],
               ["Final answer: 7", "Final answer: 2", "Final answer: 3", "Final answer: 7"]]
    scores = np.array([[1, 0, 1, 0], [1, 0, 0, 1]], dtype=float)
    greedy = [("Final answer: 9", 0.0), ("Final answer: 7", 1.0)]
    pairs, counts = make_pairs(answers, scores, per_question=2, seed=0, greedy=greedy)
    assert (counts["pairs_greedy_right"], counts["pairs"], counts["pairs_questions_used"]) == (1, 1, 1)
    assert pairs == [(0, "Final answer: 4", "Final answer: 9")]  # one distinct right answer: one pair
    pairs, _ = make_pairs([answers[0] + ["Final answer: 04"]], np.array([[1, 0, 1, 0, 1]], dtype=float),
                          per_question=3, seed=0, greedy=[("Final answer: 6", 0.0)])
    assert [p[2] for p in pairs][0] == "Final answer: 6" and len(pairs) == 2  # the greedy answer, not a duplicate


def test_gold_chosen_pairs_the_datas_answer_with_a_wrong_one_where_no_sample_is_right():
    """pairs_gold_chosen (SPIN-style): a question the model never answers right still gives one pair, the data's own
    answer against one of the wrong ones; questions with a right sample, or with no wrong one, are as before."""
    from llm_trainer.training.pairs import make_pairs

    answers = [["Final answer: 4", "Final answer: 5", "Final answer: 4", "Final answer: 6"],
               ["Final answer: 1"] * 4,
               ["Final answer: 9", "Final answer: 8", "Final answer: 7", "Final answer: 7"],
               ["", "no idea", "  ", "maybe"],
               ["Final answer: 3"] * 4]
    scores = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    gold = ["2 + 2 = 4.\n\nFinal answer: 4", "Final answer: 1", "Final answer: 10", "Final answer: 2", "  "]
    pairs, counts = make_pairs(answers, scores, per_question=2, seed=0, gold=gold)
    assert counts == {"pairs_questions": 5, "pairs_no_answer": 0, "pairs_no_correct": 1, "pairs_no_wrong": 1,
                      "pairs_gold_chosen": 2, "pairs_rarely_correct": 0, "pairs_greedy_right": 0, "pairs": 3, "pairs_questions_used": 3}
    by_question = {index: (chosen, rejected) for index, chosen, rejected in pairs}
    assert by_question[0][0] == "Final answer: 4"  # a sampled right answer, not the gold one
    assert by_question[2][0] == "Final answer: 10" and by_question[2][1] in answers[2]
    assert by_question[3] in (("Final answer: 2", "no idea"), ("Final answer: 2", "maybe"))  # unanswered: taught
    assert 4 not in by_question  # an empty gold answer is no pair


def test_code_questions_reach_verifier_pairs_through_the_tests_pass_reward():
    """A code row's reference is its tests, which no short-answer filter keeps: with the tests_pass verifier the rows
    are kept, answers are judged by running the tests, and a reply with no code counts as no answer."""
    from datasets import Dataset

    from llm_trainer.config import load_config
    from llm_trainer.evaluation.code import join_reference
    from llm_trainer.training.kit import verifiable_prompts
    from llm_trainer.training.pairs import make_pairs
    from llm_trainer.training.rewards import TestsPassReward

    cfg = load_config(DPO_QUICKSTART, ["training.dpo.verifier=tests_pass", "evaluation.code_sandbox=weak"])
    tests = join_reference("\n".join(f"assert add({a}, {b}) == {a + b}" for a, b in [(2, 3), (-1, 1), (0, 0), (7, 8),
                                                                                    (10, -4), (100, 1)]))
    rows = Dataset.from_dict({"messages": [[{"role": "user", "content": "Write add(a, b)."},
                                            {"role": "assistant", "content": "def add(a, b): return a + b"}]] * 2,
                              "reference_answer": [tests, ""]})
    prompts, counts = verifiable_prompts(rows, cfg, trainer="dpo", short_references=False)
    assert counts == {"dpo_rows": 1, "dpo_rows_without_verifiable_reference": 1}
    with pytest.raises(Exception, match="verifiable"):
        verifiable_prompts(rows, cfg, trainer="dpo", short_references=True)  # 6 asserts: no short answer
    reward = TestsPassReward(cfg)
    answers = ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```",
               "I cannot write that.", "```python\nimport os\nos._exit(0)\n```"]
    scores = np.array([reward.score(answers, [tests] * 4, [10] * 4)])
    assert scores.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    pairs, counts = make_pairs([answers], scores, per_question=4, seed=0, answered=reward.answered)
    assert counts["pairs"] == 1 and pairs[0][1] == answers[0] and pairs[0][2] in answers[1:]
    assert not reward.answered("I cannot write that.") and reward.answered(answers[1])
    _, counts = make_pairs([["no code", "none"]], np.zeros((1, 2)), per_question=1, seed=0, answered=reward.answered)
    assert counts["pairs_no_answer"] == 1


def test_dpo_settings_are_checked_before_training():
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    def refused(*overrides, config=DPO_QUICKSTART):
        with pytest.raises(ConfigError) as error:
            load_config(config, list(overrides))
        return str(error.value)

    assert "training.dpo is read by trainer dpo only" in refused("training.dpo.beta=0.5", config=QUICKSTART)
    assert "training.chunked_loss: not read by trainer dpo" in refused("training.chunked_loss=true")
    assert "loss_type" in refused("training.dpo.loss_type=orpo")
    assert "unknown name 'nope'" in refused("training.dpo.verifier=nope")
    assert "beta" in refused("training.dpo.beta=0")
    cfg = load_config(DPO_QUICKSTART)
    assert cfg.train_spec().scoring is not None  # the verifier judges as the evaluation does
    assert load_config(DPO_QUICKSTART, ["training.dpo.pairs=data"]).train_spec().scoring is None


def test_dpo_quickstart_uses_the_quickstart_base_model_data_and_test_rows():
    from llm_trainer.config import load_config

    quickstart, dpo = load_config(QUICKSTART), load_config(DPO_QUICKSTART)
    assert dpo.data == quickstart.data and dpo.evaluation == quickstart.evaluation
    assert dpo.model.model_dump(exclude={"init_adapter"}) == quickstart.model.model_dump(exclude={"init_adapter"})
    assert dpo.model.init_adapter == "production" and dpo.registry.model_name == quickstart.name


def test_preference_rows_without_pairs_are_refused_in_one_line(dpo_run):
    from datasets import DatasetDict

    from llm_trainer.config import load_config
    from llm_trainer.errors import UserError
    from llm_trainer.training.dpo import DpoTrainer

    cfg = load_config(DPO_QUICKSTART, [*dpo_run["overrides"], "training.dpo.pairs=data"])
    trainer = DpoTrainer(cfg.train_spec(), dpo_run["result"].adapter.base_model)
    with pytest.raises(UserError, match="no preference pairs"):
        trainer._pairs(DatasetDict({"train": dpo_run["processed"]["train"]}), None, dpo_run["tokenizer"],
                       Path("/nonexistent"))


def test_the_pairs_command_writes_pairs_the_preference_processor_reads(dpo_run, tmp_path):
    """`pairs --adapter SFT` answers, judges and pairs; the file is the preference processor's pairs_chat shape; a
    second run does not overwrite it without --overwrite."""
    from helpers.cli import cli

    from llm_trainer.config import DataConfig
    from llm_trainer.data import build_processor

    output = tmp_path / "pairs.jsonl"
    args = ["pairs", "--config", str(DPO_QUICKSTART), "--set", "training.dpo.pairs_max_questions=48",
            "--set", "training.dpo.pairs_samples=4", "--set", "training.dpo.pairs_max_new_tokens=48",
            "--adapter", str(dpo_run["sft"].adapter.path), "--output", str(output)]
    done = cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout[done.stdout.index("{"):])
    lines = output.read_text().splitlines()
    assert len(lines) == counts["pairs"] > 0
    assert counts["pairs_questions"] == 48
    processor = build_processor(DataConfig(processor="preference", source=str(output),
                                           splits={"train": 1.0, "validation": 0.0, "test": 0.0}))
    processed, report = processor.preprocess(processor.load())
    assert report["format"] == "pairs_chat" and report["rows_kept"] + sum(report["dropped"].values()) == len(lines)
    assert set(report["dropped"]) <= {"duplicate"}  # the verifier's pairs are well formed
    again = cli(*args)
    assert again.returncode == 2 and "pass --overwrite to replace it" in again.stderr
    assert output.read_text().splitlines() == lines


def _main() -> None:
    """The resume test's training process: DPO from the shared processed rows, killed at a step (0: never)."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TrainerCallback

    from llm_trainer.config import load_config
    from llm_trainer.training.dpo import DpoTrainer

    run_dir, out, kill_at, shared, base_model = (Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]),
                                                 Path(sys.argv[4]), sys.argv[5])
    cfg = load_config(DPO_QUICKSTART, sys.argv[6:])

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    class KillingTrainer(DpoTrainer):
        def _callbacks(self):
            return super()._callbacks() + [KillAt()]

    logged = []
    result = KillingTrainer(cfg.train_spec(), base_model).train(
        load_from_disk(str(shared / "processed")), AutoTokenizer.from_pretrained(str(shared / "tokenizer")), run_dir,
        on_metrics=lambda metrics, step: logged.append((step, metrics)))
    out.write_text(json.dumps({"metrics": result.metrics, "history": result.history, "logged": logged}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _main()


@pytest.mark.slow
def test_the_data_sft_term_is_added_to_dpo_and_needs_rows_with_messages(dpo_run, tmp_path):
    """training.dpo.data_sft_weight: the SFT term on the questions' own answers is logged at every DPO step; on
    preference rows (no chat messages to learn from) it is refused in one line."""
    from datasets import Dataset, DatasetDict

    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError
    from llm_trainer.training import run_training

    overrides = [*dpo_run["overrides"], "training.max_steps=3", "training.save_steps=100",
                 "training.dpo.data_sft_weight=1.0", "training.dpo.data_sft_batch_size=8"]
    cfg = load_config(DPO_QUICKSTART, overrides)
    result = run_training(cfg, None, dpo_run["tokenizer"], tmp_path / "dpo", processed=dpo_run["processed"])
    sft_loss = [h["data_sft_loss"] for h in result.history if "data_sft_loss" in h and "loss" in h]
    assert len(sft_loss) == 3 and all(0 < value < 20 for value in sft_loss)
    pairs = Dataset.from_dict({"prompt": [[{"role": "user", "content": "2+2?"}]],
                               "chosen": [[{"role": "assistant", "content": "Final answer: 4"}]],
                               "rejected": [[{"role": "assistant", "content": "Final answer: 5"}]]})
    with pytest.raises(ConfigError, match="data_sft_weight: the SFT term learns the train rows' own answers"):
        run_training(cfg, None, dpo_run["tokenizer"], tmp_path / "pairs", processed=DatasetDict({"train": pairs}))


def test_pairs_built_in_their_own_step_carry_the_terms_rows(dpo_run, tmp_path):
    """In `train` and `full` the build_pairs step makes the pairs and the train step gets them in place of the
    processed rows. With data_sft_weight they carry the questions' rows, and the term learns the same rows as a run
    that builds its pairs itself (it used to stop: the pairs have no chat messages)."""
    from datasets import load_from_disk

    from llm_trainer.config import load_config
    from llm_trainer.training import run_training
    from llm_trainer.training.pairs import with_term_rows
    from llm_trainer.training.sft_term import TERM_ROWS, data_sft_term

    processed, tokenizer = dpo_run["processed"], dpo_run["tokenizer"]
    built = load_from_disk(str(dpo_run["folder"] / "dpo" / "pairs" / "rows"))  # the fixture's verifier pairs
    cfg = load_config(DPO_QUICKSTART, [*dpo_run["overrides"], "training.max_steps=2", "training.save_steps=100",
                                       "training.dpo.data_sft_weight=1.0", "training.dpo.data_sft_batch_size=8"])
    handed = with_term_rows(built, processed, cfg)
    assert set(handed) == {"train", "validation", TERM_ROWS} and len(handed[TERM_ROWS]) == len(processed["train"])
    assert data_sft_term(handed, tokenizer, cfg, 1.0, 8).rows == data_sft_term(processed, tokenizer, cfg, 1.0, 8).rows
    result = run_training(cfg, None, tokenizer, tmp_path / "dpo", processed=handed)
    m = result.metrics
    assert m["dpo_train_pairs"] + m["dpo_held_out_pairs"] + m["dpo_pairs_too_long"] == sum(map(len, built.values()))
    assert [h["step"] for h in result.history if "data_sft_loss" in h] == [1, 2]
    assert 0 < result.metrics["last_data_sft_loss"] < 20
    off = load_config(DPO_QUICKSTART, [*dpo_run["overrides"], "training.dpo.data_sft_weight=0"])
    assert with_term_rows(built, processed, off) is built
