"""A memory and speed model of the default job, from a model's dimensions: plain functions, bytes and FLOPs.

Each step's peak on the GPU is what it holds for the whole step (weights, LoRA state, CUDA context) plus the
largest transient (activations, logits, KV cache). Assumptions, each an estimate until measured on a card:
- 4-bit NF4 decoder linears: 0.5 bytes a weight, plus one absmax per 64 weights (1 byte with double
  quantisation, plus an fp32 per 256 absmax; 4 bytes without). Norms and embeddings are not quantised.
- Training (``prepare_model_for_kbit_training``) casts every non-4-bit parameter to fp32: the input embeddings
  and ``lm_head`` cost 4 bytes a weight there, 2 (the compute dtype) at inference. Each counted once.
- Training's residual stream is fp32 (the embeddings are fp32, and bitsandbytes returns a 4-bit layer's output
  in its input's dtype), so a checkpointed layer input is 4 x hidden bytes a token: 512 KB a token at 8B.
- Backward recomputes one layer at a time; its saved tensors and their gradients (fp32 norms, bf16 matmul
  inputs and outputs, LoRA dropout copies in fp32, the MLP's three intermediates) are LAYER_WORK below.
- Attention is SDPA's memory-efficient or flash kernel: no [tokens, tokens] score matrix.
- The logits/loss part is measured on a CPU by tests/test_memory_model.py at Llama 3's vocabulary and width.
- CUDA context, cuBLAS workspace and allocator slack: CUDA_OVERHEAD. A card "holds" a step under 90% of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llm_trainer.evaluation.base import EVAL_LOSS_CHUNK_SIZE

GB = 1e9
GIB = 2**30
CUDA_OVERHEAD = 1.0 * GIB
USABLE = 0.9  # of the card: fragmentation, other processes


@dataclass(frozen=True)
class ModelDims:
    """The dimensions of a decoder model that the memory and speed estimates need."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """From a transformers config (LlamaConfig and alike)."""
        return cls(config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   config.intermediate_size, config.vocab_size, bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values) of one layer: KV heads x head size."""
        return self.kv_heads * (self.hidden // self.heads)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's linears: q, k, v, o, gate, up, down."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def decoder_params(self) -> int:
        """Weights in the decoder layers' linears (the ones QLoRA quantises)."""
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def embedding_params(self) -> int:
        """Weights of the input embeddings and lm_head (once when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def lora_params(self, r: int) -> int:
        """LoRA parameters at rank ``r`` on every linear of every layer (all-linear)."""
        return self.layers * r * sum(a + b for a, b in self.linear_shapes())


LLAMA3_8B = ModelDims(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128_256)
KNOWN_MODELS = {name: LLAMA3_8B for name in (
    "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-8B")}


def dims_for(base_model: str) -> ModelDims | None:
    """The dimensions of a known base model (Llama 3 8B's Hub ids), else None."""
    return KNOWN_MODELS.get(base_model)


# ------------------------------------------------------------------------------------------- held for a step

def weight_bytes(d: ModelDims, *, four_bit: bool = True, double_quant: bool = True, training: bool = True,
                 dtype_bytes: int = 2) -> float:
    """Bytes of the base model's weights on the GPU: 4-bit or 16-bit, for training or inference."""
    per_weight = (0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)) if four_bit else dtype_bytes
    embeddings = 4 if training else dtype_bytes
    norms = (2 * d.layers + 1) * d.hidden * 4
    return d.decoder_params * per_weight + d.embedding_params * embeddings + norms


def lora_bytes(d: ModelDims, r: int, training: bool = True) -> float:
    """fp32 LoRA weights; training adds their fp32 gradients and 8-bit Adam's two states (paged_adamw_8bit)."""
    return d.lora_params(r) * (4 + 4 + 2 if training else 4)


# ---------------------------------------------------------------------------------------- per-token transients

def checkpoint_bytes_per_token(d: ModelDims) -> float:
    """Gradient checkpointing keeps each layer's input: the fp32 residual stream."""
    return d.layers * d.hidden * 4


def layer_work_per_token(d: ModelDims, training: bool) -> float:
    """One layer's working set a token. Inference: fp32 norm in/out, bf16 q/k/v/attention, three bf16 MLP
    intermediates. Training (recomputed in backward): saved tensors as listed in the module docstring, twice
    (their gradients are alive together at the peak)."""
    h, kv, i = d.hidden, d.kv_dim, d.intermediate
    if not training:
        return 2 * 4 * h + 2 * (2 * h + 2 * kv) + 2 * 3 * i
    saved = 4 * 4 * h + 2 * (4 * h + 2 * kv) + 4 * (6 * h + i) + 2 * 4 * i
    return 2 * saved


def loss_bytes(d: ModelDims, tokens: int, *, chunk: int | None, training: bool, logits_bytes: int = 2,
               hidden_bytes: int = 4) -> float:
    """Peak of the output layer and the cross-entropy over ``tokens`` positions (all labelled).

    transformers (chunk None): the [tokens, vocab] logits in the compute dtype (kept by the forward), their fp32
    copy (``ForCausalLMLoss`` upcasts; none when already fp32) and the log-softmax in cross-entropy. In
    training the Trainer drops the outputs before backward, which holds the log-softmax (saved), its gradient
    and the logits' fp32 gradient: 12 bytes, above the forward's 10 in bf16.
    Chunked (llm_trainer.losses): the same per chunk of ``chunk`` rows, except that training keeps the
    fp32 logits (the compute-dtype ones are freed), plus the hidden states' gradient buffer (``hidden_bytes``: fp32
    in QLoRA training)."""
    rows = tokens if chunk is None else min(chunk, tokens)
    upcast = 4 if logits_bytes < 4 else 0
    if not training:
        return rows * d.vocab * (logits_bytes + upcast + 4)
    if chunk is None:
        return rows * d.vocab * max(logits_bytes + upcast + 4, 4 + 4 + 4)
    return rows * d.vocab * (4 + 4 + 4 + 4) + tokens * d.hidden * hidden_bytes


def kv_cache_bytes(d: ModelDims, tokens: int, dtype_bytes: int = 2) -> float:
    """Bytes of the KV cache for ``tokens`` tokens (a batch's prompts and new tokens together)."""
    return tokens * d.layers * 2 * d.kv_dim * dtype_bytes


# ------------------------------------------------------------------------------------------------ the steps

@dataclass(frozen=True)
class Job:
    """What the default job's steps run with: ``configs/reasoning.yaml`` plus a card overlay."""

    dims: ModelDims
    seq_len: int
    train_batch: int
    eval_batch: int
    lora_r: int
    chunk: int | None  # training.loss_chunk_size when the chunked loss is on, None for transformers' loss
    max_new_tokens: int
    double_quant: bool = True
    offload_activations: bool = False
    eval_prompt_tokens: int = 256  # natural_reasoning: system prompt + a ~55-word question
    benchmark_prompt_tokens: int = 1024  # lm-eval gsm8k: 5-shot prompt
    benchmark_new_tokens: int = 256  # lm-eval gsm8k's max_gen_toks
    judge_batch: int = 8
    judge_prompt_tokens: int = 1280  # question + reference + a 512-token candidate
    grpo_completions: int = 8  # training.per_device_train_batch_size under trainer grpo
    grpo_completion_tokens: int = 512


def _inference_base(job: Job) -> float:
    return (weight_bytes(job.dims, double_quant=job.double_quant, training=False)
            + lora_bytes(job.dims, job.lora_r, training=False) + CUDA_OVERHEAD)


def _forward(job: Job, tokens: int) -> float:
    return tokens * layer_work_per_token(job.dims, training=False) + tokens * job.dims.hidden * 2


def _generation(job: Job, batch: int, prompt: int, new: int) -> float:
    """KV cache for the whole answer, the prefill's working set, and the last position's logits."""
    return (kv_cache_bytes(job.dims, batch * (prompt + new)) + _forward(job, batch * prompt)
            + loss_bytes(job.dims, batch, chunk=None, training=False))


def train_peak(job: Job, tokens: int | None = None, chunk: int | None | str = "job", loss: float | None = None
               ) -> float:
    """A training micro-batch of ``tokens``: the loss part as ``loss_bytes`` gives it, unless ``loss`` is given."""
    d, tokens = job.dims, tokens if tokens is not None else job.train_batch * job.seq_len
    chunk = job.chunk if chunk == "job" else chunk
    loss = loss_bytes(d, tokens, chunk=chunk, training=True) if loss is None else loss
    held = weight_bytes(d, double_quant=job.double_quant) + lora_bytes(d, job.lora_r) + CUDA_OVERHEAD
    checkpoints = 0 if job.offload_activations else tokens * checkpoint_bytes_per_token(d)
    # The loss runs after the last layer, the recomputed layer in backward: not at the same time.
    transient = max(tokens * layer_work_per_token(d, training=True), loss)
    return held + checkpoints + tokens * d.hidden * 4 + transient


def step_peaks(job: Job) -> dict[str, float]:
    """Peak GPU bytes of each step of the default job (and of GRPO and the judge, when configured)."""
    d, base = job.dims, _inference_base(job)
    eval_tokens = job.eval_batch * job.seq_len
    loss = _forward(job, eval_tokens) + loss_bytes(d, eval_tokens, chunk=EVAL_LOSS_CHUNK_SIZE, training=False)
    generation = _generation(job, job.eval_batch, job.eval_prompt_tokens, job.max_new_tokens)
    judge_logits = job.judge_batch * d.vocab * 2  # judge() asks for the last position's logits only
    grpo_tokens = job.grpo_completions * (job.eval_prompt_tokens + job.grpo_completion_tokens)
    grpo_logits = job.grpo_completions * job.grpo_completion_tokens * d.vocab * (2 + 2)  # TRL: logits + gradient
    return {
        "train": train_peak(job),
        "evaluate base (loss)": base + loss,
        "evaluate fine-tuned (loss)": base + loss,
        "generation": base + generation,
        "lm-eval": base + _generation(job, job.eval_batch, job.benchmark_prompt_tokens, job.benchmark_new_tokens),
        # The judge loads beside the evaluated model (whose transients are gone by then).
        "judge": base + weight_bytes(d, double_quant=job.double_quant, training=False)
                 + _forward(job, job.judge_batch * job.judge_prompt_tokens) + judge_logits,
        "grpo": max(train_peak(job, grpo_tokens, loss=grpo_logits),
                    base + _generation(job, job.grpo_completions, job.eval_prompt_tokens, job.grpo_completion_tokens)),
    }


def merge_host_bytes(d: ModelDims, lora_r: int) -> float:
    """``use --merge`` runs on the CPU: host memory for the 16-bit base and the adapter (no GPU memory)."""
    return weight_bytes(d, four_bit=False, training=False) + lora_bytes(d, lora_r, False)


def fits(peak: float, card_gib: float) -> bool:
    """Whether a peak (bytes) fits a card of ``card_gib`` GiB, within the usable share USABLE."""
    return peak <= USABLE * card_gib * GIB


def max_train_tokens(job: Job, card_gib: float, chunk: int | None | str = "job") -> int:
    """The longest batch-1 context whose training step fits the card (multiples of 256 tokens)."""
    tokens = 0
    while fits(train_peak(job, tokens + 256, chunk), card_gib):
        tokens += 256
    return tokens


# ------------------------------------------------------------------------------------------------------ speed

def train_flops_per_token(d: ModelDims, seq_len: int, checkpointing: bool = True) -> float:
    """FLOPs a trained token costs in QLoRA: the frozen decoder linears forward (2N), again when recomputed
    under checkpointing (2N) and for the activation gradients (2N), no weight gradients (LoRA's are ~0.5%);
    ``lm_head`` forward and input gradient only (it is after the last checkpoint, never recomputed); causal
    attention over a block of ``seq_len`` (QK^T and AV: 2 x 2 x hidden x seq_len/2 a layer forward, x2 backward,
    x1 recomputed). The input embedding is a lookup: 0."""
    passes = 3 if checkpointing else 2
    attention = d.layers * 2 * d.hidden * seq_len
    return passes * (2 * d.decoder_params + attention) + 2 * 2 * d.vocab * d.hidden


def tokens_per_second(d: ModelDims, seq_len: int, peak_tflops: float, mfu: float, processes: int = 1,
                      checkpointing: bool = True) -> float:
    """Training tokens/s: ``processes`` GPUs, each at ``mfu`` of its published dense bf16 peak."""
    return processes * mfu * peak_tflops * 1e12 / train_flops_per_token(d, seq_len, checkpointing)


def largest_eval_batch(job: Job, card_gib: float, most: int = 64) -> int:
    """The largest power-of-two evaluation batch whose loss, generation and lm-eval steps fit the card."""
    batch = 1
    while batch < most:
        peaks = step_peaks(replace(job, eval_batch=batch * 2))
        if not all(fits(peaks[name], card_gib) for name in ("evaluate base (loss)", "generation", "lm-eval")):
            break
        batch *= 2
    return batch


def job_for(cfg: Any) -> Job | None:
    """The Job of a RunConfig whose base model's dimensions are known (None otherwise)."""
    dims = dims_for(cfg.model.base_model)
    if dims is None:
        return None
    t = cfg.training
    chunked = t.chunked_loss is True or (t.chunked_loss == "auto" and dims.vocab >= 32_000)  # use_chunked_loss
    return Job(dims, cfg.data.max_seq_length, t.per_device_train_batch_size, cfg.evaluation.batch_size, cfg.lora.r,
               t.loss_chunk_size if chunked else None, cfg.evaluation.max_new_tokens,
               double_quant=cfg.model.bnb_4bit_use_double_quant, offload_activations=t.offload_activations,
               # a GRPO config's micro-batch of completions; for any other config, GRPO at the README's settings
               **({"grpo_completions": t.per_device_train_batch_size} if t.trainer == "grpo" else {}),
               grpo_completion_tokens=t.grpo.max_completion_length)


def readme_tables(cards: list[tuple[str, Any, float]]) -> str:
    """The README's tables, from (overlay, its RunConfig, card GiB): peak per step, the longest trainable
    context per card, and the training-rate estimate. A test checks that the README holds exactly this."""
    jobs = [(name, cfg, gib, job_for(cfg)) for name, cfg, gib in cards]
    head = "| step (GiB at peak) | " + " | ".join(
        f"`{n}`: batch {j.train_batch}, eval {j.eval_batch}" for n, _, _, j in jobs) + " |"
    lines = [head, "|---|" + "---:|" * len(jobs)]
    steps = [step_peaks(j) for *_, j in jobs]
    for step in steps[0]:
        cells = [f"{p[step] / GIB:.1f}" + ("" if fits(p[step], gib) else " (no)")
                 for p, (_, _, gib, _) in zip(steps, jobs)]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    base = jobs[0][3]
    lines += ["", "Longest context that trains at batch 1 (tokens, `configs/reasoning.yaml`):", "",
              "| card | this trainer | with `offload_activations` | transformers' loss |", "|---|---:|---:|---:|"]
    for gib in (12, 16, 24, 40, 80):
        offload = replace(base, offload_activations=True)
        lines.append(f"| {gib} GB | {max_train_tokens(base, gib):,} | {max_train_tokens(offload, gib):,} | "
                     f"{max_train_tokens(base, gib, chunk=None):,} |")
    lines += ["", "Training rate per GPU (an estimate: the MFU is assumed):", "",
              "| overlay | reference card | peak TFLOP/s | MFU | GFLOP a token | tokens/s per GPU |",
              "|---|---|---:|---:|---:|---:|"]
    for name, cfg, _, job in jobs:
        hw, flops = cfg.hardware, train_flops_per_token(job.dims, job.seq_len)
        lines.append(f"| `{name}` | {hw.card} | {hw.peak_tflops:g} | {hw.mfu:.2f} | {flops / 1e9:.1f} | "
                     f"{tokens_per_second(job.dims, job.seq_len, hw.peak_tflops, hw.mfu):,.0f} |")
    return "\n".join(lines)
