"""GrpoTrainer: GRPO with verifiable rewards on TRL's GRPOTrainer, on the same 4-bit base + LoRA path as SFT.

Reads top to bottom: keep the train rows whose reference answer can be verified (the others are counted), load
the base model (4-bit unless ``model.load_in_4bit: false``) and the LoRA adapter (``model.init_adapter``: the
SFT adapter to go on from), build the weighted rewards (``training.grpo.rewards``), sample
``num_generations`` completions per prompt and update the adapter, checkpointing and resuming like SFT, then
save the adapter atomically.

The model is prompted exactly as in training and evaluation: the row's chat turns before the answer, through
the tokenizer's chat template with the generation prompt (llm_trainer.inference.encode_prompts), and stops at
the same end-of-turn tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from llm_trainer.errors import ConfigError
from llm_trainer.inference import encode_prompts, stop_token_ids
from llm_trainer.progress import ProgressWithFigures
from llm_trainer.registry import REWARDS
from llm_trainer.training.base import BaseTrainer, LoraAdapter, MetricsHook, TrainResult
from llm_trainer.training.kit import (MarkCompleteCheckpoints, RunFolderTrainerMixin, load_policy,
                                      lora_weights_in_float32, one_gpu_per_process, peak_memory_mb,
                                      save_adapter, shared_arguments, timed_train, verifiable_prompts)
from llm_trainer.training.reward_variance import prompts_with_reward_variance
from llm_trainer.training.rewards import RewardFunction, build_rewards, report_constant_rewards
from llm_trainer.training.sft_term import SftTermMixin, data_sft_term

logger = logging.getLogger(__name__)


class GrpoTrainer(BaseTrainer):
    """``training.trainer: grpo``. Trains on processed rows (chat ``messages`` and ``reference_answer``), not
    on tokenized blocks: the caller passes the processed splits."""

    inputs = "processed"

    def train(self, processed: Any, tokenizer: Any, run_dir: Path, on_metrics: MetricsHook | None = None
              ) -> TrainResult:
        """GRPO on the verifiable train prompts: sample, reward and update the adapter; save it."""
        from transformers import set_seed

        cfg = self.cfg
        set_seed(cfg.seed)
        run_dir = Path(run_dir)
        short = any(getattr(REWARDS.resolve(name), "needs_short_reference", True)
                    for name, weight in cfg.training.grpo.rewards.items() if weight)
        prompts, counts = verifiable_prompts(processed, cfg, short_references=short)
        base_model = self.base_model_for(tokenizer)
        model = load_policy(cfg, base_model)
        model.generation_config.eos_token_id = stop_token_ids(tokenizer)  # ends a turn as at inference
        if cfg.training.grpo.variance_filter_samples:
            prompts, filtered = prompts_with_reward_variance(model, tokenizer, prompts, cfg)
            counts.update(filtered)
        rewards, weights = build_rewards(cfg)
        trainer = _TrackingGrpoTrainer(
            model=model, reward_funcs=rewards, args=self._grpo_arguments(run_dir / "checkpoints", weights),
            train_dataset=prompts, processing_class=tokenizer, callbacks=self._callbacks())
        trainer.on_metrics, trainer.reward_functions = on_metrics, rewards
        trainer.sft_term = data_sft_term(processed, tokenizer, cfg, cfg.training.grpo.data_sft_weight,
                                         cfg.training.grpo.data_sft_batch_size)
        trainer.remove_callback(PrinterCallback)  # dicts of quoted numbers; the progress line shows the run
        lora_weights_in_float32(model)
        trainable, total = model.get_nb_trainable_parameters()
        wall_time = timed_train(trainer, cfg.training, run_dir / "checkpoints")
        constant = report_constant_rewards(rewards)
        # not TRL's frozen "ref" copy of the adapter
        adapter_dir = save_adapter(trainer, model, tokenizer, cfg, base_model, run_dir, selected_adapters=["default"])
        history = list(trainer.state.log_history)
        metrics = {
            **counts,
            "global_step": trainer.state.global_step,
            "wall_time_s": round(wall_time, 2),
            "peak_memory_mb": peak_memory_mb(),
            "trainable_params": int(trainable),
            "total_params": int(total),
            "constant_rewards": len(constant),
            **_reward_counts(rewards),
            **{f"first_{key}": value for key, value in _first_logged(history).items()},
            **{f"last_{key}": value for key, value in _last_logged(history).items()},
        }
        return TrainResult(adapter=LoraAdapter(path=adapter_dir, base_model=base_model), metrics=metrics,
                           history=history, model=model)

    def _callbacks(self) -> list[Any]:
        return [MarkCompleteCheckpoints(), ProgressWithFigures({"reward": "reward {:.3f}",
                                                                "completions/mean_length": "{:.0f} tokens/answer"})]

    def _grpo_arguments(self, output_dir: Path, reward_weights: list[float]) -> GRPOConfig:
        """The kit's shared arguments (learning rate, steps and batch sizes in completions from ``training``), plus
        GRPO's own (``training.grpo``)."""
        import torch

        g = self.cfg.training.grpo
        if g.use_vllm:
            import importlib.util

            if not (torch.cuda.is_available() and importlib.util.find_spec("vllm")):
                raise ConfigError("training.grpo.use_vllm: TRL's vLLM generation needs a CUDA GPU and the vllm "
                                  "package here; set it to false to generate with transformers")
        return one_gpu_per_process(GRPOConfig(
            **shared_arguments(self.cfg, output_dir),
            num_generations=g.num_generations,
            max_completion_length=g.max_completion_length,
            temperature=g.temperature,
            beta=g.beta,
            loss_type=g.loss_type,
            reward_weights=reward_weights,
            use_vllm=g.use_vllm,
            vllm_mode=g.vllm_mode,
            eval_strategy="no",
            gradient_checkpointing=self.cfg.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        ))


class _TrackingGrpoTrainer(SftTermMixin, RunFolderTrainerMixin, GRPOTrainer):
    """Prompts through the project's own prompt encoding; reward failures counted; metrics to the hook; the SFT term
    (``training.grpo.data_sft_weight``) added to the loss."""

    reward_functions: list[RewardFunction] = []

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
        from llm_trainer.inference import context_window

        room = max(1, context_window(self.model, self._tokenizer) - self.max_completion_length)
        prompt_ids, _ = encode_prompts(self._tokenizer, prompts, room)
        return prompt_ids, None, {}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(_reward_counts(self.reward_functions))
        super().log(logs, start_time)  # adds TRL's means since the last log to ``logs``
        self.report_metrics(logs)


def _reward_counts(rewards: list[RewardFunction]) -> dict[str, int]:
    """Completions each reward failed on (scored 0), and those too large or deep for the symbolic check."""
    counts = {f"rewards/{f.__name__}/errors": f.errors for f in rewards}
    counts.update({f"rewards/{f.__name__}/unverifiable": f.reward.unverifiable for f in rewards
                   if hasattr(f.reward, "unverifiable")})
    return counts


TRACKED = ("reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length", "data_sft_loss")


def _logged(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k in TRACKED or (k.startswith("rewards/") and k.endswith("/mean"))}
            for h in history if "loss" in h]


def _first_logged(history: list[dict[str, Any]]) -> dict[str, float]:
    logged = _logged(history)
    return logged[0] if logged else {}


def _last_logged(history: list[dict[str, Any]]) -> dict[str, float]:
    logged = _logged(history)
    return logged[-1] if logged else {}
