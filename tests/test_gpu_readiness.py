"""What the first real GPU run depends on, checked on a CPU with mocks only at the hardware boundary: no silent
CPU fallback for a real model, one GPU per process, memory freed between steps, and configs sized for a card."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from conftest import ROOT


def real_model_config(**model):
    from llm_trainer.config import load_config

    overrides = [f"model.{key}={value}" for key, value in model.items()]
    return load_config(ROOT / "configs" / "reasoning.yaml", overrides).model


def test_a_real_model_without_a_gpu_is_one_line_naming_the_cpu_build():
    from llm_trainer.errors import ConfigError
    from llm_trainer.modeling import load_model

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build; the message under test is the CPU build's")
    cfg = real_model_config()
    with pytest.raises(ConfigError) as error:
        load_model(cfg.base_model, cfg)
    message = str(error.value)
    assert "\n" not in message and "needs a CUDA GPU" in message and "CPU-only build" in message
    assert "model.allow_cpu: true" in message


def test_a_cuda_build_whose_driver_is_too_old_says_so(monkeypatch):
    from llm_trainer.errors import ConfigError
    from llm_trainer.modeling import check_device

    def old_driver():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).\nPlease update it.")

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "init", old_driver)
    with pytest.raises(ConfigError, match=r"CUDA cannot start: The NVIDIA driver on your system is too old") as error:
        check_device(real_model_config())
    assert "\n" not in str(error.value)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=r"torch sees no CUDA device \(CUDA_VISIBLE_DEVICES=''\)"):
        check_device(real_model_config())


def test_allow_cpu_and_the_tiny_model_load_without_a_gpu(tiny_fp32):
    from llm_trainer.modeling import check_device, load_model

    check_device(tiny_fp32.cfg.model)  # tiny-llama: fine on a CPU
    folder = tiny_fp32.model.name_or_path  # a local, non-tiny model path from now on
    cfg = tiny_fp32.cfg.model.model_copy(update={"base_model": folder, "allow_cpu": True})
    assert load_model(folder, cfg).device.type == "cpu"


def test_one_process_on_a_machine_with_several_gpus_uses_one_gpu(monkeypatch):
    """The Trainer counts every visible GPU (batch x GPUs, all on GPU 0 with a 4-bit model) unless told."""
    from llm_trainer.config import load_config
    from llm_trainer.training.qlora import QLoraTrainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *args: None)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    arguments = QLoraTrainer(cfg)._training_arguments(ROOT / "unused", has_eval=True)
    assert arguments.n_gpu == 1
    assert arguments.train_batch_size == cfg.training.per_device_train_batch_size


@pytest.mark.parametrize(("setting", "gpus", "expected"), [("auto", 0, 1), ("auto", 1, 1), ("auto", 4, 4),
                                                           (1, 4, 1), (2, 0, 2)])
def test_num_processes_auto_is_one_per_visible_gpu(monkeypatch, make_config, setting, gpus, expected):
    from llm_trainer.training import process_count

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert process_count(make_config(training={"num_processes": setting})) == expected


def test_evaluation_frees_the_model_it_loaded(tiny_fp32, monkeypatch):
    """The local orchestrator runs train and both evaluations in one process: each model must be gone (and
    the CUDA cache emptied) when its step ends, not at some later garbage collection."""
    from llm_trainer import inference
    from llm_trainer.evaluation import base
    from llm_trainer.modeling import load_model

    alive = []

    def load(cfg, base_model, adapter_path=None, tokenizer=None):
        model = load_model(base_model, cfg)
        model.cycle = model  # a reference cycle, as 4-bit layers hold: only a full collection frees it
        alive.append(weakref.ref(model))
        return model

    gc.disable()  # so that only the step's own collection can free the model
    try:
        monkeypatch.setattr(inference, "load_for_inference", load)
        monkeypatch.setattr(base.BaseEvaluator, "loss_metrics", lambda *args: {})
        cfg = tiny_fp32.cfg.model_copy(update={"evaluation": tiny_fp32.cfg.evaluation.model_copy(
            update={"max_samples": 2, "max_new_tokens": 2})})
        result = base.evaluate_model_on_test(cfg, tiny_fp32.tokenizer, tiny_fp32.model.name_or_path, None,
                                             tiny_fp32.processed["test"], None)
        assert result.metrics["examples"] == 2
        assert alive and alive[0]() is None
    finally:
        gc.enable()


def test_training_frees_the_trained_model(make_config, monkeypatch, tmp_path):
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer
    from llm_trainer.training import qlora, run_training

    cfg = make_config(training={"max_steps": 1, "eval_steps": 1, "save_steps": 1, "per_device_train_batch_size": 2,
                                "optim": "adamw_torch"}, model={"load_in_4bit": False, "dtype": "float32"})
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    trained = []
    original = qlora.QLoraTrainer.train

    def train(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        trained.append(weakref.ref(result.model))
        return result

    monkeypatch.setattr(qlora.QLoraTrainer, "train", train)
    gc.disable()
    try:
        result = run_training(cfg, tokenized, tokenizer, tmp_path)
        assert result.model is None and trained and trained[0]() is None
    finally:
        gc.enable()


CARDS = ["16gb", "24gb", "80gb"]


@pytest.mark.parametrize("card", CARDS)
def test_card_overlays_validate_and_keep_sixteen_sequences_per_step(card):
    from llm_trainer.config import load_config

    cfg = load_config([ROOT / "configs" / "reasoning.yaml", ROOT / "configs" / "cards" / f"{card}.yaml"])
    t = cfg.training
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 16
    assert cfg.data.max_seq_length == 2048 and cfg.hardware.card.startswith(f"{card[:-2]} GB")
    assert cfg.hardware.peak_tflops > 0 and 0.2 <= cfg.hardware.mfu <= 0.35 and cfg.hardware.train_tokens_per_second is None
    assert cfg.model.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"  # the overlay only sizes the run


def test_the_real_config_is_a_first_run_not_three_days():
    from llm_trainer.config import load_config

    cfg = load_config(ROOT / "configs" / "reasoning.yaml")
    assert cfg.data.max_samples == 100_000 and cfg.training.num_processes == "auto"
    assert cfg.training.eval_steps >= 1000 and cfg.training.max_eval_blocks is not None
    assert cfg.evaluation.max_new_tokens == 1024  # responses average ~520 Llama 3 tokens: 512 cut many answers


def test_training_time_estimate(monkeypatch):
    from llm_trainer import modeling
    from llm_trainer.config import load_config
    from llm_trainer.estimates import training_time_estimate

    # 24 GB (A10G): 25% of 70 TFLOP/s at 45.6 GFLOP a token (6 x 6.98B decoder + 4 x lm_head + attention)
    cfg = load_config(ROOT / "configs" / "reasoning.yaml")
    monkeypatch.setattr(modeling, "visible_gpus", lambda: 0)
    line = training_time_estimate(cfg, 70_000_000)
    assert "about 50.7 h for 70,000,000 tokens at ~384 tokens/s" in line and "estimate" in line
    assert "MFU 25% of 70 TFLOP/s at 45.6 GFLOP a token" in line and "no GPU seen" in line
    monkeypatch.setattr(modeling, "visible_gpus", lambda: 4)  # num_processes: auto counts the GPUs
    assert "about 12.7 h for 70,000,000 tokens at ~1,535 tokens/s (num_processes auto: 4 GPUs" in \
        training_time_estimate(cfg, 70_000_000)
    steps = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 100,
                                                                               "num_processes": 1})})
    assert "for 3,276,800 tokens" in training_time_estimate(steps, 70_000_000)  # 100 x 2 x 8 x 2048
    measured = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"train_tokens_per_second": 500})})
    assert "at ~2,000 tokens/s" in training_time_estimate(measured, 70_000_000)  # 4 GPUs x the measured 500
    quick = load_config(ROOT / "configs" / "quickstart.yaml")
    assert training_time_estimate(quick, 200_000) is None  # no card rate configured


@pytest.mark.slow
def test_process_prints_the_training_time_estimate():
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "run_pipeline.py", "process", "--config", "configs/quickstart.yaml", "--set",
         "hardware.card=a test card", "--set", "hardware.train_tokens_per_second=1000",
         "--set", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    estimate = next(line for line in result.stdout.splitlines() if line.startswith("estimated training time"))
    tokens = int(estimate.split(" for ")[1].split(" tokens")[0].replace(",", ""))
    assert "on a test card" in estimate and tokens > 100_000  # the sample's train split, 2 epochs


def test_the_colab_notebook_keeps_colabs_torch_and_defaults_to_a_t4_run():
    import json

    from llm_trainer.config import load_config

    notebook = json.loads((ROOT / "notebooks" / "llama3_reasoning_finetuning.ipynb").read_text())
    assert notebook["metadata"]["colab"]["gpuType"] == "T4"
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "-r\", \"requirements-runtime.txt\"" in code[1] and "\"requirements.txt\"" not in code[1]
    parameters = {}
    exec(code[0], {}, parameters)  # the parameter cell: plain assignments
    assert code[0].splitlines()[1].startswith("REPO_URL = ") and parameters["REPO_URL"] == ""
    cfg = load_config(ROOT / parameters["CONFIG"], parameters["OVERRIDES"])
    assert (cfg.data.max_samples, cfg.data.max_seq_length) == (3000, 1024)
    assert (cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps) == (1, 16)
    assert cfg.model.bnb_4bit_compute_dtype == "float16" and cfg.evaluation.max_samples == 100
