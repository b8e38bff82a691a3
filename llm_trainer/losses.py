"""Causal-LM loss without the full logits, activation offload, and the choice between them and liger-kernel.

The plain loss makes logits of shape [tokens, vocabulary] in fp32, then their log-softmax and gradient: at
Llama 3's 128,256 entries that is about 1.5 MB per token, more than all checkpointed layer activations of an
8B model. The chunked loss here takes the last hidden states instead (the output layer's input, captured by a
pre-hook that hands the output layer an empty slice), and runs the output layer and cross-entropy over at most
``chunk_size`` labelled tokens at a time: each chunk's logits are made, differentiated and dropped inside the
forward pass, which keeps only the gradient of the hidden states (and of any trainable output-layer weights).
Tokens whose label is ignored (-100: prompts, the first token of each packed sample, padding) get no logits.
The labels are shifted exactly as transformers' ForCausalLMLoss does, and ``num_items_in_batch`` divides the
sum the same way, so packed samples, ignored labels and gradient accumulation give the same numbers.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from llm_trainer.errors import UserError

IGNORE_INDEX = -100
# At a vocabulary of 32k, fp32 logits plus their gradient (8 bytes x 32k = 256 KB per token) already equal the
# checkpointed activations of all 32 layers of a 7B model (32 x 4096 x 2 bytes); above it the logits dominate.
CHUNKED_LOSS_MIN_VOCAB = 32_000
# Config attributes of models that transform the output layer's result before the loss; the chunked loss
# only knows the plain linear output layer, so those models keep transformers' own loss.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def use_chunked_loss(setting: bool | str, vocab_size: int, liger: bool) -> bool:
    """``training.chunked_loss``: true, false, or 'auto' (vocabularies of CHUNKED_LOSS_MIN_VOCAB and more)."""
    if liger:  # liger's fused linear cross-entropy already never materialises the logits
        return False
    if setting == "auto":
        return vocab_size >= CHUNKED_LOSS_MIN_VOCAB
    return bool(setting)


def use_liger_kernel(setting: bool | str, on_gpu: bool) -> bool:
    """``training.use_liger_kernel``: 'auto' uses it on a GPU when liger-kernel is installed; true requires both."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if setting == "auto":
        return on_gpu and installed
    if setting and not on_gpu:
        raise UserError("training.use_liger_kernel: true needs a CUDA GPU (liger-kernel is Triton code); "
                        "use 'auto' or false on this machine")
    if setting and not installed:
        raise UserError("training.use_liger_kernel: true, but liger-kernel is not installed "
                        "(pip install liger-kernel), or set it to 'auto' or false")
    return bool(setting)


def supports_chunked_loss(config: Any) -> bool:
    """Whether the model's logits are plain lm_head outputs (no softcapping or scaling)."""
    return not any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``head(hidden)`` against ``labels``, chunk by chunk; gradients made in forward.
    The output layer runs in ``compute_dtype`` (autocast, as the model's own forward) when given, the
    cross-entropy in fp32."""

    @staticmethod
    def forward(ctx, hidden, labels, head, chunk_size, compute_dtype, *params):
        wants = ctx.needs_input_grad
        grad_hidden = torch.zeros_like(hidden) if wants[0] else None
        grad_params = [torch.zeros_like(p) if wants[5 + i] else None for i, p in enumerate(params)]
        trainable = [p for i, p in enumerate(params) if wants[5 + i]]
        rows = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        autocast = torch.autocast(hidden.device.type, dtype=compute_dtype or torch.float32,
                                  enabled=compute_dtype not in (None, torch.float32))
        for start in range(0, rows.numel(), chunk_size):
            index = rows[start:start + chunk_size]
            # A chunk's saved tensors live only until its grad below: an outer ActivationOffload's hooks would copy
            # them (its log-softmax) to host memory and back, so they are kept where they are.
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
                chunk = hidden.index_select(0, index).detach().requires_grad_(wants[0])
                with autocast:  # the model's forward ran under autocast; this runs after it, outside
                    logits = head(chunk)
                loss = F.cross_entropy(logits.float(), labels.index_select(0, index), reduction="sum")
                inputs = ([chunk] if wants[0] else []) + trainable
                grads = torch.autograd.grad(loss, inputs) if inputs else ()
            total += loss.detach()
            grads = list(grads)
            if wants[0]:
                grad_hidden.index_add_(0, index, grads.pop(0).to(hidden.dtype))
            for slot, grad in zip([g for g in grad_params if g is not None], grads, strict=True):
                slot += grad
        ctx.save_for_backward(*(g for g in [grad_hidden, *grad_params] if g is not None))
        ctx.layout = [grad_hidden is not None] + [g is not None for g in grad_params]
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grads = []
        saved = iter(ctx.saved_tensors)
        for present in ctx.layout:
            if present:
                grad = next(saved)
                grads.append(grad * grad_total.to(grad.dtype))
            else:
                grads.append(None)
        return grads[0], None, None, None, None, *grads[1:]


def _same(tensor: Any) -> Any:
    return tensor


def chunked_causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, chunk_size: int,
                           num_items_in_batch: torch.Tensor | int | None = None,
                           compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """transformers' ForCausalLMLoss of ``head(hidden)``, without ever holding more than one chunk's logits.

    ``hidden``: [batch, tokens, hidden]; ``labels``: [batch, tokens], not yet shifted. The mean over labelled
    tokens, or the sum divided by ``num_items_in_batch`` when given (gradient accumulation)."""
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1).to(hidden.device)
    flat = hidden.reshape(-1, hidden.shape[-1])
    # Under no_grad the Function still sees requires_grad parameters (a base model's lm_head) as needing a
    # gradient, and would build and fill one: evaluation passes none.
    grad = torch.is_grad_enabled()
    params = [p for p in head.parameters()] if grad else []
    flat = flat if grad else flat.detach()
    total = _LinearCrossEntropy.apply(flat, shifted, head, chunk_size, compute_dtype, *params)
    if num_items_in_batch is None:
        return total / (shifted != IGNORE_INDEX).sum()  # 0/0 = nan when nothing is labelled, as the plain loss
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


@contextlib.contextmanager
def capture_output_layer_input(head: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While active, the output layer records its input and gets an empty slice of it: no logits are made."""
    captured: dict[str, torch.Tensor] = {}

    def take_input(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("input")
        captured["hidden"] = hidden
        return (hidden[..., :0, :], *args[1:]), kwargs

    handle = head.register_forward_pre_hook(take_input, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


class ActivationOffload(torch.autograd.graph.saved_tensors_hooks):
    """Tensors saved for backward live in CPU memory until backward needs them.

    Non-reentrant gradient checkpointing saves each layer's input through these hooks, so with checkpointing
    on, the checkpointed activations are what moves. On a GPU the host copies are pinned and both copies are
    queued without blocking the host; parameters (frozen weights saved by matmuls) and small tensors stay. On
    a CPU the activations already are in CPU memory: nothing is copied, only counted (``offloaded``)."""

    def __init__(self, min_bytes: int = 1 << 20):
        self.offloaded = 0

        def pack(tensor: torch.Tensor) -> Any:
            if isinstance(tensor, torch.nn.Parameter) or tensor.numel() * tensor.element_size() < min_bytes:
                return tensor
            self.offloaded += 1
            if tensor.device.type == "cpu":
                return tensor
            host = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            return tensor.device, host

        def unpack(packed: Any) -> torch.Tensor:
            if isinstance(packed, torch.Tensor):
                return packed
            device, host = packed
            return host.to(device, non_blocking=True)

        super().__init__(pack, unpack)


def model_loss_from_hidden(model: Any, output_layer: torch.nn.Module, inputs: dict[str, Any], chunk_size: int,
                           num_items_in_batch: torch.Tensor | int | None = None,
                           compute_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, Any]:
    """Run ``model`` (any wrapper: peft, DDP) without labels and compute the causal-LM loss in chunks.

    ``output_layer`` is the unwrapped model's get_output_embeddings() (the LoRA wrapper if it is adapted).
    Returns the loss and the model's outputs, whose logits cover no token."""
    labels = inputs["labels"]
    with capture_output_layer_input(output_layer) as captured:
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
    loss = chunked_causal_lm_loss(captured["hidden"], labels, output_layer, chunk_size, num_items_in_batch,
                                  compute_dtype)
    outputs["loss"] = loss
    return loss, outputs


def batch_token_counts(inputs: dict[str, Any]) -> tuple[int, int]:
    """(tokens fed, longest sample) of one collated batch.

    A sample's length is the position of its last labelled token + 1 (position_ids restart at 0 for each
    packed sample; every sample ends in labelled answer tokens, padding tails have none); with a padded
    batch, the attention mask's longest row."""
    input_ids = inputs["input_ids"]
    if "attention_mask" in inputs:
        lengths = inputs["attention_mask"].sum(-1)
        return int(lengths.sum()), int(lengths.max())
    positions = inputs.get("position_ids")
    if positions is None:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
    ends = (positions + 1) * (inputs["labels"] != IGNORE_INDEX)
    return int(input_ids.numel()), int(ends.max())
