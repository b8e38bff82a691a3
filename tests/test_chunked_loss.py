"""The chunked causal-LM loss equals transformers' loss (and its LoRA gradients) to 1e-5 in fp32, with packed
samples, ignored labels and gradient accumulation; activation offload trains to the same loss; liger's wiring."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from llm_trainer.data.collate import PackedBlockCollator, PaddedCollator
from llm_trainer.errors import UserError
from llm_trainer import losses

PEFT_TARGETS = {"all-linear": "all-linear",  # the output layer frozen (peft leaves lm_head out of all-linear)
                "with lm_head": ["q_proj", "v_proj", "down_proj", "lm_head"]}  # and adapted: its LoRA gets grads


def packed_batch(vocab: int, pad: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three blocks of packed samples of unequal lengths; each sample's prompt (first third) is ignored."""
    rng = np.random.default_rng(seed)
    features = []
    for sample_lengths in ([40, 25, 30], [60, 12], [20]):  # the short block gets a 75-token padding tail
        ids, labels, positions = [], [], []
        for n in sample_lengths:
            tokens = rng.integers(3, vocab, n)
            ids.extend(tokens)
            labels.extend([-100] * (n // 3) + list(tokens[n // 3:]))
            positions.extend(range(n))
        features.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return PackedBlockCollator(pad)(features)


def lora_model(tiny_fp32, targets):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(tiny_fp32.model), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                      target_modules=targets))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give it values so that every LoRA matrix gets a gradient
            torch.nn.init.normal_(param, std=0.02)
    return model.train()


def loss_and_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("targets", PEFT_TARGETS)
@pytest.mark.parametrize("num_items", [None, 517])  # mean over labels, or a sum over accumulated micro-batches
def test_chunked_loss_and_lora_gradients_equal_the_plain_loss(tiny_fp32, targets, num_items):
    model = lora_model(tiny_fp32, PEFT_TARGETS[targets])
    batch = packed_batch(model.config.vocab_size, tiny_fp32.tokenizer.pad_token_id)
    assert (batch["labels"] == -100).float().mean() > 0.3  # prompts, sample starts and the padding tail
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    plain, plain_grads = loss_and_grads(model, model(**batch, **kwargs).loss)

    head = model.get_output_embeddings()
    for chunk in (7, 4096):  # many chunks, and one
        loss, outputs = losses.model_loss_from_hidden(model, head, batch, chunk, kwargs.get("num_items_in_batch"))
        assert outputs.logits.shape[1] == 0  # the full logits were never made
        chunked, grads = loss_and_grads(model, loss)
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)
        assert grads.keys() == plain_grads.keys() and any("lm_head" in n for n in grads) == (targets != "all-linear")
        for name, grad in plain_grads.items():
            assert grad.abs().max() > 0, name
            scale = grad.abs().max()  # entries near zero: 1e-5 of the tensor's largest (summation order)
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5 * scale,
                                       msg=lambda m, name=name, d=(grads[name] - grad).abs().max(): f"{name}: {d} {m}")


def test_padded_batches_and_no_grad_evaluation_match(tiny_fp32):
    model = tiny_fp32.model
    rng = np.random.default_rng(1)
    features = [{"input_ids": rng.integers(3, 500, n).tolist(), "labels": [-100] * 5 + rng.integers(3, 500, n - 5)
                 .tolist()} for n in (30, 50, 9)]
    batch = PaddedCollator(tiny_fp32.tokenizer.pad_token_id)(features)
    with torch.no_grad():
        plain = model(**batch).loss
        chunked, _ = losses.model_loss_from_hidden(model, model.get_output_embeddings(), batch, 16)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)
    assert losses.batch_token_counts(batch) == (89, 50)


def test_batch_token_counts_see_the_longest_sample_not_the_padding_tail(tiny_fp32):
    batch = packed_batch(1000, 0)
    assert losses.batch_token_counts(batch) == (3 * 95, 60)


def test_chunked_loss_is_the_default_for_large_vocabularies_only():
    assert losses.use_chunked_loss("auto", 128_256, liger=False)
    assert losses.use_chunked_loss("auto", 32_000, liger=False)
    assert not losses.use_chunked_loss("auto", 1024, liger=False)  # the tiny model keeps the plain loss
    assert losses.use_chunked_loss(True, 1024, liger=False)
    assert not losses.use_chunked_loss(True, 128_256, liger=True)  # liger's fused loss replaces it
    assert not losses.supports_chunked_loss(type("Gemma2Like", (), {"final_logit_softcapping": 30.0})())


def test_liger_kernel_is_used_on_a_gpu_when_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def installed(name, *args):
        return object() if name == "liger_kernel" else real(name, *args)

    def missing(name, *args):
        return None if name == "liger_kernel" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    assert not losses.use_liger_kernel("auto", on_gpu=True)
    with pytest.raises(UserError, match="not installed"):
        losses.use_liger_kernel(True, on_gpu=True)
    monkeypatch.setattr(importlib.util, "find_spec", installed)
    assert losses.use_liger_kernel("auto", on_gpu=True)
    assert not losses.use_liger_kernel("auto", on_gpu=False)
    assert not losses.use_liger_kernel(False, on_gpu=True)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        losses.use_liger_kernel(True, on_gpu=False)


def one_step(tiny_fp32, tokenized, tmp_path, make_config, **training):
    from llm_trainer.training.qlora import QLoraTrainer

    cfg = make_config(model={"load_in_4bit": False, "dtype": "float32"}, lora={"lora_dropout": 0.0},
                      training={"max_steps": 2, "optim": "sgd", "learning_rate": 0.5, "warmup_steps": 0,
                                "lr_scheduler_type": "constant", "max_grad_norm": 1e9, "logging_steps": 1,
                                "save_steps": 1000, "eval_steps": 1000, "per_device_train_batch_size": 2,
                                "gradient_accumulation_steps": 2, **training})
    result = QLoraTrainer(cfg).train(tokenized, tiny_fp32.tokenizer, tmp_path / str(sorted(training.items())))
    lora = {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}
    return result.metrics, [h["loss"] for h in result.history if "loss" in h], lora


@pytest.fixture(scope="module")
def tokenized(tiny_fp32):
    from llm_trainer.data import build_processor

    tokenized, _ = build_processor(tiny_fp32.cfg.data).tokenize(tiny_fp32.processed, tiny_fp32.tokenizer)
    tokenized["train"] = tokenized["train"].select(range(8))
    tokenized["validation"] = tokenized["validation"].select([])
    return tokenized


def test_training_with_chunked_loss_and_offload_matches_the_plain_loss(tiny_fp32, tokenized, tmp_path, make_config,
                                                                        monkeypatch):
    plain_metrics, plain_losses, plain_lora = one_step(tiny_fp32, tokenized, tmp_path, make_config,
                                                       chunked_loss=False)
    assert plain_metrics["chunked_loss"] == 0 and len(plain_losses) == 2
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert plain_metrics["tokens_per_step"] == pytest.approx(sum(lengths) / 2, rel=0.15)  # blocks padded per batch
    assert 16 < plain_metrics["max_sample_tokens"] <= max(lengths)
    assert plain_metrics["peak_memory_mb"] > 0

    offloads, real_offload = [], losses.ActivationOffload

    def recorded_offload():  # every saved tensor counts: the tiny model's are all under the 1 MiB default
        offloads.append(real_offload(min_bytes=0))
        return offloads[-1]

    monkeypatch.setattr(losses, "ActivationOffload", recorded_offload)
    # Both options at once (each alone costs another run): any difference from the plain run fails.
    metrics, step_losses, lora = one_step(tiny_fp32, tokenized, tmp_path, make_config, chunked_loss=True,
                                          loss_chunk_size=64, offload_activations=True)
    assert metrics["chunked_loss"] == 1
    assert step_losses == pytest.approx(plain_losses, rel=1e-5)  # the second step sees the first update
    for name, tensor in plain_lora.items():
        torch.testing.assert_close(lora[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert len(offloads) == 4 and all(o.offloaded > 0 for o in offloads)  # 2 steps x 2 micro-batches, offloaded


def test_the_output_layer_runs_in_the_compute_dtype_and_the_cross_entropy_in_fp32():
    """prepare_model_for_kbit_training leaves the head and the hidden states in fp32, and the loss runs after the
    model's autocast: the chunk's matmul must still be in the compute dtype (bf16 here), its loss in fp32."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 64, bias=False)
    hidden = torch.randn(2, 10, 16, requires_grad=True)
    labels = torch.randint(0, 64, (2, 10))
    seen = []
    head.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    loss = losses.chunked_causal_lm_loss(hidden, labels, head, 4, compute_dtype=torch.bfloat16)
    loss.backward()
    assert seen and set(seen) == {torch.bfloat16}
    assert loss.dtype == torch.float32 and hidden.grad.dtype == torch.float32
    reference = torch.nn.functional.cross_entropy((hidden[:, :-1] @ head.weight.T).reshape(-1, 64),
                                                  labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, reference, rtol=2e-2, atol=2e-2)  # bf16's precision


def test_activation_offload_leaves_the_chunked_loss_alone():
    """Each chunk's logits and log-softmax live only inside that chunk's gradient: offloading them would copy
    every one to host memory and back."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 512, bias=False).requires_grad_(False)  # frozen, as under LoRA
    hidden = torch.randn(1, 64, 8, requires_grad=True)
    labels = torch.randint(0, 512, (1, 64))
    offload = losses.ActivationOffload(min_bytes=hidden.numel() * 4 + 1)  # more than the hidden states
    with offload:
        losses.chunked_causal_lm_loss(hidden, labels, head, 32).backward()
    assert offload.offloaded == 0 and hidden.grad.abs().max() > 0
