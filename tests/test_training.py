"""QLoRA training on the tiny model, on CPU: what changes, what must not, loss, reload, resume after kill -9."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TRAIN_OVERRIDES = ["data.max_seq_length=256", "training.max_steps=12",
                   "training.logging_steps=2", "training.eval_steps=4", "training.save_steps=4",
                   "training.per_device_train_batch_size=8", "training.learning_rate=5e-3"]


def prepared(overrides):
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", TRAIN_OVERRIDES + overrides)
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    return cfg, tokenized, tokenizer


def base_state(model) -> dict[str, torch.Tensor]:
    """Every non-LoRA tensor (4-bit weights and their quantisation statistics included), without PEFT prefixes."""
    state = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        state[clean] = tensor.detach().clone()
    return state


@pytest.fixture(scope="module", params=["4bit", "fp32"])
def trained(request, tmp_path_factory):
    from llm_trainer.modeling import load_model
    from llm_trainer.training import build_trainer

    overrides = [] if request.param == "4bit" else ["model.load_in_4bit=false", "model.dtype=float32"]
    cfg, tokenized, tokenizer = prepared(overrides)
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    result = build_trainer(cfg).train(tokenized, tokenizer, run_dir)
    fresh_base = load_model(result.adapter.base_model, cfg.model)
    return request.param, cfg, tokenized, tokenizer, result, fresh_base


def test_only_lora_weights_change(trained):
    mode, _, _, _, result, fresh_base = trained
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at exactly zero
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before, after = base_state(fresh_base), base_state(result.model)
    assert set(before) == set(after)
    changed = [n for n in before if not torch.equal(before[n].float(), after[n].float())]
    assert changed == []
    assert sum(1 for n in before if n.endswith(".weight.absmax")) == (14 if mode == "4bit" else 0)
    linear_types = {type(m).__name__ for m in fresh_base.modules() if "Linear" in type(m).__name__}
    assert ("Linear4bit" in linear_types) == (mode == "4bit")


def test_validation_loss_falls_and_metrics_are_reported(trained):
    _, _, _, _, result, _ = trained
    m = result.metrics
    assert m["eval_loss"] < 0.9 * m["eval_loss_before"], m
    assert m["global_step"] == 12
    assert m["trained_tokens"] > 0 and m["train_tokens_per_second"] > 0
    assert m["peak_memory_mb"] > 0 and 0 < m["trainable_params"] < m["total_params"]
    logged = [h for h in result.history if "loss" in h]
    assert [h["step"] for h in logged][:3] == [1, 2, 4]
    assert all({"learning_rate", "grad_norm", "train_tokens_per_second"} <= set(h) for h in logged[1:])
    first_eval = next(h for h in result.history if "eval_loss" in h)
    assert first_eval["step"] == 0  # eval_on_start: the curve starts at the base model's loss


def test_adapter_reloads_on_a_fresh_base(trained):
    from peft import PeftModel

    from llm_trainer.data.collate import collator_for
    from llm_trainer.modeling import load_model

    mode, cfg, tokenized, tokenizer, result, _ = trained
    files = {p.name for p in result.adapter.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    # The saved tensors are exactly the trained LoRA weights in memory.
    from safetensors.torch import load_file

    saved = load_file(result.adapter.path / "adapter_model.safetensors")
    in_memory = {n.replace(".default", ""): p.detach() for n, p in result.model.named_parameters() if "lora_" in n}
    assert saved.keys() == in_memory.keys() and len(saved) > 0
    for name, tensor in saved.items():
        assert torch.equal(tensor, in_memory[name].to(tensor.dtype)), name
    reloaded = PeftModel.from_pretrained(load_model(result.adapter.base_model, cfg.model), result.adapter.path)
    reloaded.eval()
    collate = collator_for(True, "sdpa", tokenizer.pad_token_id)
    validation, size = tokenized["validation"], cfg.training.per_device_eval_batch_size
    losses, weights = [], []
    with torch.no_grad():  # the Trainer's eval loss: mean of batch losses weighted by batch size
        for start in range(0, len(validation), size):
            rows = [validation[i] for i in range(start, min(start + size, len(validation)))]
            losses.append(float(reloaded(**collate(rows), use_cache=False).loss))  # a cache disables packing masks
            weights.append(len(rows))
    reloaded_loss = sum(l * w for l, w in zip(losses, weights)) / sum(weights)
    # fp32 reloads exactly; in 4-bit, bitsandbytes stores CPU quantisation statistics in bf16 after inference
    assert reloaded_loss == pytest.approx(result.metrics["eval_loss"], rel=1e-5 if mode == "fp32" else 0.02)
    assert reloaded_loss < 0.95 * result.metrics["eval_loss_before"]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "tolerance"), [("fp32", 1e-5), ("4bit", 1e-5)])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, mode, tolerance):
    """Killed after the step-8 checkpoint, the resumed run must retrace the uninterrupted run's curve."""
    precision = ["model.load_in_4bit=false", "model.dtype=float32"] if mode == "fp32" else []

    def run(run_dir, out, *extra):
        return subprocess.run([sys.executable, str(ROOT / "tests/helpers/train_once.py"), str(run_dir), str(out),
                               *extra, *TRAIN_OVERRIDES, *precision], capture_output=True, text=True, timeout=600)

    straight = run(tmp_path / "straight", tmp_path / "straight.json")
    assert straight.returncode == 0, straight.stderr[-2000:]

    crashed = run(tmp_path / "crashed", tmp_path / "unused.json", "9")
    assert crashed.returncode == -9
    checkpoints = tmp_path / "crashed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-8"]
    half_written = checkpoints / "checkpoint-12"
    half_written.mkdir()
    (half_written / "trainer_state.json").write_text("{trunc")

    resumed = run(tmp_path / "crashed", tmp_path / "resumed.json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (checkpoints / "checkpoint-12" / "trainer_state.json").read_text().startswith("{trunc")

    def losses(path):
        history = json.loads(path.read_text())["history"]
        return {h["step"]: h["loss"] for h in history if "loss" in h}, json.loads(path.read_text())["metrics"]

    straight_losses, straight_metrics = losses(tmp_path / "straight.json")
    resumed_losses, resumed_metrics = losses(tmp_path / "resumed.json")
    assert set(straight_losses) == set(resumed_losses)
    for step, loss in straight_losses.items():
        assert resumed_losses[step] == pytest.approx(loss, rel=tolerance), step
    assert resumed_metrics["global_step"] == 12
    # It resumed rather than started over: this process trained only steps 9-12 (a third of the batches).
    assert 0 < resumed_metrics["trained_tokens"] < 0.5 * straight_metrics["trained_tokens"]
    assert resumed_metrics["eval_loss"] == pytest.approx(straight_metrics["eval_loss"], rel=tolerance)


def test_failed_adapter_save_is_one_clear_error_and_keeps_the_previous_adapter(tmp_path, monkeypatch):
    import errno

    from llm_trainer.errors import UserError
    from llm_trainer.training import build_trainer
    from llm_trainer.training import kit

    cfg, tokenized, tokenizer = prepared(["training.max_steps=2", "model.load_in_4bit=false"])
    first = build_trainer(cfg).train(tokenized, tokenizer, tmp_path)
    saved = (first.adapter.path / "adapter_model.safetensors").read_bytes()

    def disk_full(target, save, replace=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kit, "write_dir_atomically", disk_full)
    with pytest.raises(UserError, match=r"cannot save the adapter to .*adapter: No space left on device; the "
                                         r"previous adapter there \(if any\) is untouched"):
        build_trainer(cfg.model_copy(update={"seed": 7})).train(tokenized, tokenizer, tmp_path)
    assert (first.adapter.path / "adapter_model.safetensors").read_bytes() == saved


def test_early_stopping_stops_without_enough_improvement(tmp_path):
    """With a threshold no step can meet, patience 1 stops at the second evaluation in training (the one
    before the first step is no baseline: there is no checkpoint of it); the final eval is of the better one."""
    from llm_trainer.training import build_trainer

    cfg, tokenized, tokenizer = prepared(["model.load_in_4bit=false", "training.max_steps=30",
                                          "training.eval_steps=2", "training.save_steps=2",
                                          "training.early_stopping_patience=1",
                                          "training.early_stopping_threshold=100"])
    result = build_trainer(cfg).train(tokenized, tokenizer, tmp_path)
    evals = [(h["step"], h["eval_loss"]) for h in result.history if "eval_loss" in h]
    (first_step, _), *during, (_, final) = evals  # before training, in training, after (best model loaded)
    assert first_step == 0 and [step for step, _ in during] == [2, 4]
    assert result.metrics["global_step"] == 4
    best = min(loss for _, loss in during)
    assert final == pytest.approx(best, rel=1e-4) and result.metrics["eval_loss"] == pytest.approx(best, rel=1e-4)


def test_a_finished_run_is_reported_again_not_retrained(tmp_path, capsys):
    """The same config, data and seed in the same run folder: the second call trains nothing and reports the first
    run's figures and adapter (it used to resume at the last step and report a mean loss of 0 and 0 tokens/s);
    training.resume=never trains again."""
    from llm_trainer.training import run_training

    cfg, tokenized, tokenizer = prepared(["training.max_steps=2", "training.eval_steps=2", "training.save_steps=2",
                                          "model.load_in_4bit=false", "model.dtype=float32"])
    first = run_training(cfg, tokenized, tokenizer, tmp_path)
    adapter_bytes = (first.adapter.path / "adapter_model.safetensors").read_bytes()
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["global_step"] == 2
    capsys.readouterr()
    again = run_training(cfg, tokenized, tokenizer, tmp_path)
    assert "finished before (same config, data and seed)" in capsys.readouterr().out
    assert again.metrics.pop("reused_finished_run") == 1
    assert again.metrics == first.metrics and again.metrics["train_tokens_per_second"] > 0
    assert again.history == first.history and again.adapter == first.adapter
    assert (again.adapter.path / "adapter_model.safetensors").read_bytes() == adapter_bytes

    never = cfg.model_copy(update={"training": cfg.training.model_copy(update={"resume": "never"})})
    retrained = run_training(never, tokenized, tokenizer, tmp_path)
    assert "reused_finished_run" not in retrained.metrics and retrained.metrics["trained_tokens"] > 0


def test_a_broken_finished_run_record_means_not_finished(tmp_path):
    from llm_trainer.training.base import RESULT_FILE, TrainResult

    assert TrainResult.load_finished(tmp_path, "base") is None
    (tmp_path / RESULT_FILE).write_text('{"adapter": "adapter", "metrics": {}, "history": []}')
    assert TrainResult.load_finished(tmp_path, "base") is None  # no adapter folder
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert TrainResult.load_finished(tmp_path, "base").metrics == {"reused_finished_run": 1}
    (tmp_path / RESULT_FILE).write_text('{"adapter": "adapter", "metrics"')  # cut short
    assert TrainResult.load_finished(tmp_path, "base") is None
