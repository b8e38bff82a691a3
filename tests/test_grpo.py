"""GRPO after SFT on the tiny model, on CPU: the format reward rises, only the LoRA weights move, the prompt is the
training prompt, rewards that fail or never vary are counted and reported, and a run killed with -9 resumes.

Run as a script, this file is the resume test's training process:
    python tests/test_grpo.py RUN_DIR OUT_JSON KILL_AT_STEP SHARED_DIR OVERRIDE...
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.quickstart import prepare_quickstart

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
GRPO_QUICKSTART = ROOT / "configs" / "grpo_quickstart.yaml"
SFT_OVERRIDES = ["data.max_seq_length=256", "training.max_steps=12", "training.learning_rate=5e-3",
                 "training.eval_steps=100", "training.save_steps=100"]
GRPO_STEPS = 20
GRPO_OVERRIDES = ["data.max_seq_length=256", "training.logging_steps=1", "training.save_steps=5",
                  f"training.max_steps={GRPO_STEPS}", "training.grpo.num_generations=4",
                  "training.per_device_train_batch_size=8", "training.grpo.max_completion_length=48",
                  # the format reward's dynamics this file measures: no prompt filter, full-temperature samples
                  "training.gradient_accumulation_steps=1", "training.learning_rate=3e-3",
                  "training.grpo.variance_filter_samples=0", "training.grpo.temperature=1.0",
                  "training.grpo.data_sft_weight=0",  # the GRPO loss alone (tests/test_sft_term.py: with the term)
                  'training.grpo.rewards={format: 1.0, "test_grpo:FlakyReward": 0.0, "test_grpo:ConstantReward": 0.0}']


class FlakyReward:
    """Raises on completions of a length divisible by 3 (a buggy reward); weight 0, so it teaches nothing."""

    def __init__(self, cfg):
        pass

    def score(self, completions, references, lengths):
        if any(len(text) % 3 == 0 for text in completions):
            raise ValueError("cannot score this one")
        return [1.0] * len(completions)


class ConstantReward:
    def __init__(self, cfg):
        pass

    def score(self, completions, references, lengths):
        return [0.5] * len(completions)


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """A 12-step SFT run of the quickstart, then 20 GRPO steps of grpo_quickstart.yaml going on from its adapter,
    through run_training; records the prompts given to generation, the tracked metrics and the reward warnings."""
    from llm_trainer.config import load_config
    from llm_trainer.training import build_trainer, run_training
    from llm_trainer.training.grpo import _TrackingGrpoTrainer

    folder = tmp_path_factory.mktemp("grpo")
    sft_cfg, processor, processed, tokenizer = prepare_quickstart(SFT_OVERRIDES)
    tokenized, _ = processor.tokenize(processed, tokenizer)
    sft = build_trainer(sft_cfg).train(tokenized, tokenizer, folder / "sft")
    overrides = [*GRPO_OVERRIDES, f"model.init_adapter={sft.adapter.path}"]
    cfg = load_config(GRPO_QUICKSTART, overrides)

    prompts, logged, warnings = [], [], []
    generate = _TrackingGrpoTrainer._generate_single_turn

    def recording(self, prompt_ids, *args, **kwargs):
        prompts.extend(prompt_ids)
        return generate(self, prompt_ids, *args, **kwargs)

    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("llm_trainer.training.rewards").addHandler(handler)
    _TrackingGrpoTrainer._generate_single_turn = recording
    try:
        result = run_training(cfg, processed, tokenizer, folder / "grpo", keep_model=True,
                              on_metrics=lambda metrics, step: logged.append((step, metrics)))
    finally:
        _TrackingGrpoTrainer._generate_single_turn = generate
        logging.getLogger("llm_trainer.training.rewards").removeHandler(handler)
    shared = folder / "shared"  # what the resume test's processes load instead of processing again
    processed.save_to_disk(str(shared / "processed"))
    tokenizer.save_pretrained(str(shared / "tokenizer"))
    return {"cfg": cfg, "overrides": overrides, "sft": sft, "result": result, "prompts": prompts, "logged": logged,
            "warnings": warnings, "processed": processed, "tokenizer": tokenizer, "shared": shared,
            "tokenized": tokenized, "folder": folder}


def _per_step(history, key):
    return {h["step"]: h[key] for h in history if key in h}


def test_format_reward_rises_and_the_run_is_tracked(grpo_run):
    result, logged = grpo_run["result"], grpo_run["logged"]
    format_mean = [value for _, value in sorted(_per_step(result.history, "rewards/format/mean").items())]
    assert len(format_mean) == GRPO_STEPS == result.metrics["global_step"]
    first, last = sum(format_mean[:5]) / 5, sum(format_mean[-5:]) / 5
    assert last > first + 0.15, format_mean
    # The tracking hook got TRL's reward, KL, length and zero-variance figures at every logging step.
    steps = [step for step, metrics in logged if "rewards/format/mean" in metrics]
    assert steps == list(range(1, GRPO_STEPS + 1))
    tracked = next(metrics for _, metrics in logged if "rewards/format/mean" in metrics)
    assert {"rewards/format/std", "kl", "completions/mean_length", "frac_reward_zero_std", "reward",
            "rewards/FlakyReward/errors"} <= set(tracked)
    assert {"system/cpu_percent", "system/host_memory_used_mb", "system/process_rss_mb"} <= set(tracked)  # issue 35
    assert any(metrics.get("kl", 0) > 0 for _, metrics in logged)  # beta > 0: the KL to the SFT adapter is measured
    zero_share = [metrics["frac_reward_zero_std"] for _, metrics in logged if "frac_reward_zero_std" in metrics]
    assert all(0 <= share <= 1 for share in zero_share) and any(0 < share for share in zero_share)
    assert result.metrics["last_rewards/format/mean"] == format_mean[-1]


def test_rows_without_a_verifiable_reference_are_left_out_and_counted(grpo_run):
    references = list(grpo_run["processed"]["train"]["reference_answer"])
    without = sum(not reference.strip() for reference in references)  # the sample's references: one word or none
    metrics = grpo_run["result"].metrics
    assert without > 0
    assert metrics["grpo_rows_without_verifiable_reference"] == without
    assert metrics["grpo_rows"] == len(references) - without


def test_failing_and_constant_rewards_are_counted_and_reported_once(grpo_run):
    metrics, warnings = grpo_run["result"].metrics, grpo_run["warnings"]
    assert metrics["rewards/FlakyReward/errors"] > 0  # the run went on; those completions scored 0
    errors = [m.get("rewards/FlakyReward/errors") for _, m in grpo_run["logged"] if "rewards/FlakyReward/errors" in m]
    assert errors == sorted(errors) and errors[-1] == metrics["rewards/FlakyReward/errors"]
    constant = [w for w in warnings if "constant over the whole run" in w]
    assert len(constant) == 1 and "ConstantReward=0.5" in constant[0] and "format" not in constant[0]
    assert metrics["constant_rewards"] == 1


def test_only_lora_weights_change_and_the_adapter_goes_on_from_sft(grpo_run):
    import torch
    from safetensors.torch import load_file

    from llm_trainer.modeling import load_model

    result, sft = grpo_run["result"], grpo_run["sft"]
    fresh = load_model(result.adapter.base_model, grpo_run["cfg"].model)

    def base_state(model):
        return {name.replace("base_model.model.", "").replace(".base_layer", ""): tensor.detach().clone()
                for name, tensor in model.state_dict().items() if "lora_" not in name}

    before, after = base_state(fresh), base_state(result.model)
    assert set(before) == set(after) and sum(1 for n in before if n.endswith(".weight.absmax")) == 14  # 4-bit
    assert [n for n in before if not torch.equal(before[n].float(), after[n].float())] == []
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".default." in n for n in trainable)

    started, trained = load_file(sft.adapter.path / "adapter_model.safetensors"), \
        load_file(result.adapter.path / "adapter_model.safetensors")
    assert started.keys() == trained.keys()  # the SFT adapter, trained further (not TRL's frozen reference copy)
    assert all(t.dtype == torch.float32 for t in trained.values())
    moved = [n for n in started if not torch.equal(started[n], trained[n])]
    assert len(moved) > len(started) // 2
    assert not (result.adapter.path / "ref").exists()


def test_generation_prompts_are_the_training_prompts(grpo_run):
    from llm_trainer.data.tokenization import encode, render_prompt_and_completion

    tokenizer, prompts = grpo_run["tokenizer"], grpo_run["prompts"]
    rendered, _ = render_prompt_and_completion(tokenizer, list(grpo_run["processed"]["train"]["messages"]))
    training_prompts = {tuple(ids) for ids in encode(tokenizer, rendered)}  # what SFT masked as the prompt
    assert len(prompts) == GRPO_STEPS * 8
    assert all(tuple(ids) in training_prompts for ids in prompts)


def test_sft_goes_on_from_an_init_adapter(grpo_run):
    """model.init_adapter for SFT: the validation loss before the first step is the SFT adapter's final one."""
    from llm_trainer.config import load_config
    from llm_trainer.training import build_trainer

    sft = grpo_run["sft"]
    cfg = load_config(QUICKSTART, [*SFT_OVERRIDES, "training.max_steps=1", f"model.init_adapter={sft.adapter.path}"])
    again = build_trainer(cfg).train(grpo_run["tokenized"], grpo_run["tokenizer"], grpo_run["folder"] / "sft-again")
    assert sft.metrics["eval_loss"] < 0.9 * sft.metrics["eval_loss_before"]  # far from a fresh LoRA's loss
    assert again.metrics["eval_loss_before"] == pytest.approx(sft.metrics["eval_loss"], rel=1e-3)
    assert again.metrics["global_step"] == 1


@pytest.mark.slow
def test_resume_after_sigkill_retraces_the_uninterrupted_run(grpo_run, tmp_path):
    """Killed at step 7 (checkpoint at 5), the re-run resumes at step 6 and logs the uninterrupted run's rewards
    and losses for steps 6-20: the sampling RNG comes back with the checkpoint."""
    base_model = grpo_run["result"].adapter.base_model
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}

    def run(kill_at):
        return subprocess.run([sys.executable, __file__, str(tmp_path / "run"), str(tmp_path / "out.json"),
                               str(kill_at), str(grpo_run["shared"]), base_model, *grpo_run["overrides"]],
                              capture_output=True, text=True, timeout=600, env=env)

    crashed = run(7)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-5"]
    resumed = run(0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    straight = grpo_run["result"].history
    # This process trained (and logged) steps 6-20 only; its history also holds steps 1-5 from the checkpoint.
    assert [step for step, metrics in out["logged"] if "loss" in metrics] == list(range(6, GRPO_STEPS + 1))
    for key in ("rewards/format/mean", "loss", "completions/mean_length"):
        expected, got = _per_step(straight, key), _per_step(out["history"], key)
        assert sorted(got) == sorted(expected) == list(range(1, GRPO_STEPS + 1)), key
        for step, value in got.items():
            assert value == pytest.approx(expected[step], rel=1e-4, abs=1e-6), (key, step)
    assert out["metrics"]["global_step"] == GRPO_STEPS


def test_rewards_score_format_answers_and_length():
    from llm_trainer.config import load_config
    from llm_trainer.training.rewards import AnswerCorrectReward, FormatReward, LengthReward

    cfg = load_config(GRPO_QUICKSTART, ["training.grpo.max_completion_length=48", "training.grpo.length_budget=30"])
    solutions = ["2 x 4 = 8 dollars.\n\nFinal answer: 8", "2 x 4 = 8 dollars.", "Final answer:", "Final answer: 9"]
    assert FormatReward(cfg).score(solutions, ["8"] * 4, [0] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert AnswerCorrectReward(cfg).score(solutions, ["8"] * 4, [0] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert LengthReward(cfg).score([""] * 4, [""] * 4, [10, 30, 39, 60]) == [0.0, 0.0, -0.5, -1.0]


def test_a_reward_that_raises_scores_that_completion_zero(caplog):
    from llm_trainer.training.rewards import RewardFunction, report_constant_rewards

    wrapped = RewardFunction("flaky", FlakyReward(None))
    completions = [[{"role": "assistant", "content": text}] for text in ("abc", "abcd", "abcdef", "ab")]
    values = wrapped(prompts=[[]] * 4, completions=completions, completion_ids=[[1]] * 4,
                     reference_answer=["1"] * 4)
    assert values == [0.0, 1.0, 0.0, 1.0] and wrapped.errors == 2
    assert [r.getMessage() for r in caplog.records if "failed on a completion" in r.getMessage()] != []
    constant = RewardFunction("constant", ConstantReward(None))
    constant(prompts=[[]], completions=["x"], completion_ids=[[1]])
    caplog.clear()
    assert report_constant_rewards([wrapped, constant]) == ["constant"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_grpo_settings_are_checked_before_training(tmp_path):
    import datasets

    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError, UserError
    from llm_trainer.training.grpo import GrpoTrainer, verifiable_prompts
    from llm_trainer.training.kit import attach_lora

    with pytest.raises(ConfigError, match=r"\(32 completions\) must be a multiple of grpo.num_generations \(3\)"):
        load_config(GRPO_QUICKSTART, ["training.grpo.num_generations=3"])
    with pytest.raises(ConfigError, match="training.grpo.rewards: unknown name 'exact'"):
        load_config(GRPO_QUICKSTART, ["training.grpo.rewards={exact: 1.0}"])
    with pytest.raises(ConfigError, match="training.grpo.rewards: every reward weight is 0"):
        load_config(GRPO_QUICKSTART, ["training.grpo.rewards={answer_correct: 0.0, format: 0}"])
    assert load_config(GRPO_QUICKSTART, ["training.grpo.rewards={answer_correct: 0.0, format: 0.5}"])
    cfg = load_config(GRPO_QUICKSTART)
    with pytest.raises(ConfigError, match="model.init_adapter: 'production' is no adapter folder"):
        attach_lora(None, cfg, "base")
    tokenized = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"input_ids": [[1, 2]]})})
    with pytest.raises(UserError, match="pass the processed splits"):
        verifiable_prompts(tokenized, cfg)
    with pytest.raises(ConfigError, match=r"training.grpo.use_vllm: .* 4-bit base; set model.load_in_4bit: false"):
        load_config(GRPO_QUICKSTART, ["training.grpo.use_vllm=true"])
    vllm = load_config(GRPO_QUICKSTART, ["training.grpo.use_vllm=true", "model.load_in_4bit=false"])
    with pytest.raises(ConfigError, match="training.grpo.use_vllm: TRL's vLLM generation needs a CUDA GPU"):
        GrpoTrainer(vllm)._grpo_arguments(tmp_path, [1.0])


def test_grpo_quickstart_uses_the_quickstart_base_model_and_data():
    """The SFT adapter it goes on from belongs to the quickstart's tiny model, built from the quickstart's data."""
    from llm_trainer.config import load_config

    sft, grpo = load_config(QUICKSTART), load_config(GRPO_QUICKSTART)
    assert grpo.data == sft.data and grpo.seed == sft.seed
    assert grpo.evaluation == sft.evaluation  # production (the SFT version) was scored on the same test rows
    assert grpo.model.model_copy(update={"init_adapter": None}) == sft.model
    assert grpo.training.trainer == "grpo" and grpo.model.init_adapter == "production"


def _train_once(argv: list[str]) -> None:
    """The resume test's training process: GRPO from the shared processed data and tokenizer, optionally killed
    with SIGKILL at a step."""
    import datasets
    from transformers import AutoTokenizer, TrainerCallback

    from llm_trainer.config import load_config
    from llm_trainer.training.grpo import GrpoTrainer

    run_dir, out, kill_at, shared, base_model, *overrides = argv
    kill_at = int(kill_at)

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    class KillingTrainer(GrpoTrainer):
        def _callbacks(self):
            return super()._callbacks() + ([KillAt()] if kill_at else [])

    cfg = load_config(GRPO_QUICKSTART, overrides)
    processed = datasets.load_from_disk(str(Path(shared) / "processed"))
    tokenizer = AutoTokenizer.from_pretrained(str(Path(shared) / "tokenizer"))
    logged = []
    result = KillingTrainer(cfg, base_model).train(processed, tokenizer, Path(run_dir),
                                                   on_metrics=lambda metrics, step: logged.append((step, metrics)))
    Path(out).write_text(json.dumps({"metrics": result.metrics, "history": result.history, "logged": logged}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _train_once(sys.argv[1:])


def test_the_loss_chart_carries_grpo_reward_curves():
    from llm_trainer.reporting import loss_curve_png, reward_series

    history = [{"step": 1, "loss": 0.5, "reward": 0.2, "rewards/format/mean": 0.2, "rewards/format/std": 0.4},
               {"step": 2, "loss": 0.4, "reward": 0.6, "rewards/format/mean": 0.6}, {"eval_loss": 1.0}]
    assert reward_series(history) == {"reward": [(1, 0.2), (2, 0.6)], "rewards/format/mean": [(1, 0.2), (2, 0.6)]}
    assert reward_series([{"step": 1, "loss": 0.5}]) == {}  # SFT: no reward axis
    assert loss_curve_png(history).startswith(b"\x89PNG")
