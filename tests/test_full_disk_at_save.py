"""A full disk while a checkpoint or the adapter is saved: one line naming the folder, the half-written checkpoint
removed, the previous adapter untouched, and a re-run resumes from the last complete checkpoint."""

from __future__ import annotations

import pytest

from conftest import ROOT

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


def _half_written(path: str, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload[: len(payload) // 2])


def test_a_full_disk_at_checkpoint_or_adapter_save_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    import stat

    import peft.peft_model
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from llm_trainer import fsutil
    from llm_trainer.errors import UserError
    from llm_trainer.training.kit import COMPLETE_MARKER, resume_checkpoint
    from llm_trainer.training.qlora import QLoraTrainer

    cfg, tokenized, tokenizer = _prepared(["training.max_steps=4", "training.save_steps=2"])
    checkpoints = tmp_path / "checkpoints"
    real_save_file, real_torch_save = peft.peft_model.safe_save_file, torch.save

    def disk_fills_at(marker: str):
        def save_file(tensors, path, metadata=None):
            if marker not in str(path):
                return real_save_file(tensors, path, metadata=metadata)
            _half_written(path, safetensors.torch.save(tensors, metadata=metadata))
            raise SafetensorError(ENOSPC_SAFETENSORS)
        return save_file

    # 1. safetensors fails half-way through the adapter weights of checkpoint-4.
    monkeypatch.setattr(peft.peft_model, "safe_save_file", disk_fills_at("checkpoint-4"))
    with pytest.raises(UserError) as error:
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert str(error.value) == (f"cannot save the checkpoint {checkpoints / 'checkpoint-4'}: No space left on "
                                "device; a re-run resumes from the last complete checkpoint")
    assert (checkpoints / "checkpoint-2" / COMPLETE_MARKER).exists() and not (checkpoints / "checkpoint-4").exists()
    monkeypatch.setattr(peft.peft_model, "safe_save_file", real_save_file)

    # 2. torch's writer fails half-way through the optimizer state (it names no cause: the free space does).
    def torch_save(obj, path, *args, **kwargs):
        if "checkpoint-4" not in str(path):
            return real_torch_save(obj, path, *args, **kwargs)
        _half_written(path, b"\0" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 0)
    assert resume_checkpoint(cfg.training, checkpoints) == str(checkpoints / "checkpoint-2")
    with pytest.raises(UserError, match=r"^cannot save the checkpoint .*checkpoint-4: No space left on device;"):
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    monkeypatch.setattr(torch, "save", real_torch_save)

    # Room again: the re-run resumes from checkpoint-2 and saves the adapter, with the umask's modes.
    assert resume_checkpoint(cfg.training, checkpoints) == str(checkpoints / "checkpoint-2")
    first = QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert first.metrics["global_step"] == 4 and (checkpoints / "checkpoint-4" / COMPLETE_MARKER).exists()
    weights = first.adapter.path / "adapter_model.safetensors"
    assert stat.S_IMODE(first.adapter.path.stat().st_mode) == 0o777 & ~fsutil.current_umask()
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~fsutil.current_umask()
    saved = weights.read_bytes()

    # 3. The adapter's weights fail half-way: one line, the previous adapter and nothing else left.
    monkeypatch.setattr(peft.peft_model, "safe_save_file", disk_fills_at(".adapter.tmp-"))
    with pytest.raises(UserError) as error:
        QLoraTrainer(cfg).train(tokenized, tokenizer, tmp_path)
    assert str(error.value) == (f"cannot save the adapter to {tmp_path / 'adapter'}: No space left on device; "
                                "the previous adapter there (if any) is untouched")
    assert weights.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir() if "adapter" in p.name) == ["adapter"]


def _prepared(overrides: list[str]):
    """The quickstart data and tiny tokenizer (the ones other test modules use, so the tiny base is shared)."""
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", ["data.max_seq_length=256", "model.load_in_4bit=false",
                                                               "training.logging_steps=2", *overrides])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    tokenized, _ = processor.tokenize(processed, tokenizer)
    return cfg, tokenized, tokenizer
