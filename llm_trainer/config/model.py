"""The model and LoRA sections: base model, 4-bit loading, the offline tiny model, peft's LoraConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator


from llm_trainer.config.base import TINY_MODEL_NAME, Section


class TinyModelConfig(Section):
    """Shape of the offline tiny Llama used when model.base_model is 'tiny-llama'."""

    vocab_size: int = Field(1024, ge=300, description="Entries of the BPE tokenizer trained on the data.")
    hidden_size: int = Field(64, gt=0, description="Width of the model (a multiple of num_attention_heads).")
    intermediate_size: int = Field(192, gt=0, description="Width of each layer's MLP.")
    num_hidden_layers: int = Field(2, gt=0, description="Decoder layers.")
    num_attention_heads: int = Field(4, gt=0, description="Query heads (a multiple of num_key_value_heads).")
    num_key_value_heads: int = Field(2, gt=0, description="Key/value heads (grouped-query attention).")
    max_position_embeddings: int = Field(2048, gt=0, description="Longest context the model takes, in tokens.")
    tokenizer_max_chars: int = Field(1_000_000, gt=0, description="Text the BPE tokenizer trains on, at most: "
                                     "sampled by hash from the train split, so the build does not grow with the data.")
    pretrain_max_tokens: int = Field(300_000, gt=0, description="Tokens of plain-text pre-training, at most (all "
                                     "epochs together).")
    pretrain_epochs: int = Field(3, gt=0, description="Passes over the pre-training text (within "
                                 "pretrain_max_tokens). More makes a base model that reads its input better, so "
                                 "fine-tuning can teach it more: the quickstart uses 20.")

    def architecture(self) -> dict[str, int]:
        """The LlamaConfig fields (the budgets are not part of the architecture)."""
        return self.model_dump(exclude={"vocab_size", "tokenizer_max_chars", "pretrain_max_tokens", "pretrain_epochs"})

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Section):
    """The ``model`` section: the base model, how it loads (4-bit, dtype, attention) and its chat template."""

    base_model: str = Field(description=f"Hub id, local path, or '{TINY_MODEL_NAME}' (built offline).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    trust_remote_code: bool = Field(False, description="Let transformers run the model repository's own code.")
    load_in_4bit: bool = Field(True, description="Load the base in 4-bit with bitsandbytes (QLoRA); false: plain "
                               "LoRA on the weights in ``dtype``.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the base weights.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantise the 4-bit blocks' scales too (about 0.4 "
                                            "bit a weight less).")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the 4-bit layers compute in (and the mixed precision of training); "
        "float16 on a GPU without bfloat16.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype when not loading in 4-bit."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="transformers' attention kernel; flash_attention_2 needs the flash-attn package and a "
        "CUDA GPU.")
    chat_template: str | None = Field(None, description="Jinja chat template overriding the tokenizer's.")
    allow_cpu: bool = Field(False, description="Run a model other than tiny-llama without a CUDA GPU (slow; an "
                            "error otherwise).")
    init_adapter: str | None = Field(None, description="Start training from this LoRA adapter (its own LoRA "
                                     "settings) instead of a fresh one: an adapter folder, or a registered version "
                                     "such as 'production', which the runner resolves to its folder.")
    tiny: TinyModelConfig = Field(TinyModelConfig(), description=f"Shape and pre-training budget of the offline "
                                  f"'{TINY_MODEL_NAME}' model.")

    @field_validator("init_adapter", mode="before")
    @classmethod
    def _version_number_as_text(cls, value: Any) -> Any:
        """A version number (``--set model.init_adapter=3``, which YAML reads as an int) names that version."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("base_model")
    @classmethod
    def _local_path_exists(cls, value: str) -> str:
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            raise ValueError(f"local path '{value}' does not exist")
        return value

    @property
    def is_tiny(self) -> bool:
        """Whether the base model is the offline tiny Llama, built from the data instead of downloaded."""
        return self.base_model == TINY_MODEL_NAME


class LoraSettings(Section):
    """peft.LoraConfig fields."""

    r: int = Field(16, gt=0, description="LoRA rank: the inner dimension of each adapter pair.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling: the update is multiplied by lora_alpha / r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA layers' input in training.")
    target_modules: str | list[str] = Field("all-linear", description="Modules that get adapters: 'all-linear', or "
                                            "module names such as [q_proj, v_proj].")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train with the adapter.")
