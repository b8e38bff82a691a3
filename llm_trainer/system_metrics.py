"""What a training run costs, sampled at each logging step: CPU and host memory (psutil), and on a GPU its memory
allocated, reserved and peak and its utilisation; and MFU, the share of the card's peak FLOP/s training reaches.

The figures go into the trainer's logs (so into the run's history, its loss chart and MLflow) under ``system/``
names. Every GPU figure is left out on a machine without CUDA, and utilisation where NVML cannot be read.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)
MB = 2**20

# Published dense bf16/fp16 tensor peaks, TFLOP/s (no sparsity), by a piece of torch.cuda.get_device_name();
# the first match wins. ``hardware.peak_tflops`` in the config takes precedence over this table.
PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1),
               ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX A4000", 76.7), ("T4", 65.0), ("V100", 125.0))


def card_peak_tflops(configured: float | None = None, device_name: str | None = None) -> float | None:
    """The card's peak TFLOP/s: ``configured`` (``hardware.peak_tflops``) when given, else the table's figure for
    this GPU (or ``device_name``), else None (no GPU, or a card the table does not know)."""
    if configured:
        return float(configured)
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    return next((peak for piece, peak in PEAK_TFLOPS if piece.lower() in device_name.lower()), None)


def model_flops_utilization(tokens_per_second: float, flops_per_token: float, peak_tflops: float | None
                            ) -> float | None:
    """MFU: the FLOP/s a GPU's training tokens cost over its peak; None without a peak."""
    if not peak_tflops or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak_tflops * 1e12)


def train_flops_per_token(model: Any, seq_len: int, checkpointing: bool) -> float | None:
    """FLOPs a trained token costs in this model (llm_trainer.memory's count, from the model's config); None for
    a config without a decoder's usual fields."""
    from llm_trainer.memory import ModelDims, train_flops_per_token as count

    config = getattr(model, "config", None)
    try:
        return count(ModelDims.from_config(config), seq_len, checkpointing)
    except (AttributeError, TypeError):
        return None


class SystemSampler:
    """Samples the process's and the machine's CPU and memory, and the GPU's memory and utilisation. CPU
    percentages are over the time since the previous sample (since construction for the first)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # primes both: the next call measures from here
        psutil.cpu_percent(None)

    def sample(self) -> dict[str, float]:
        """``system/*`` figures now: CPU %, host memory, and the GPU's where there is one."""
        psutil = self._psutil
        memory = psutil.virtual_memory()
        figures = {
            "system/cpu_percent": psutil.cpu_percent(None),  # the whole machine, 0-100
            "system/process_cpu_percent": self._process.cpu_percent(None),  # this process, 100 a core
            "system/host_memory_used_mb": round(memory.used / MB, 1),
            "system/host_memory_percent": memory.percent,
            "system/process_rss_mb": round(self._process.memory_info().rss / MB, 1),
        }
        figures.update(gpu_figures())
        return figures


def gpu_figures() -> dict[str, float]:
    """This process's GPU memory (allocated, reserved, peak reserved, MB) and the card's utilisation (%); empty
    without CUDA, and no utilisation where NVML (nvidia-ml-py) cannot be read."""
    import torch

    if not torch.cuda.is_available():
        return {}
    figures = {
        "system/gpu_memory_allocated_mb": round(torch.cuda.memory_allocated() / MB, 1),
        "system/gpu_memory_reserved_mb": round(torch.cuda.memory_reserved() / MB, 1),
        "system/gpu_memory_peak_mb": round(torch.cuda.max_memory_reserved() / MB, 1),
    }
    try:
        figures["system/gpu_utilization_percent"] = float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 - pynvml missing or NVML unavailable: the memory figures still count
        logger.debug("GPU utilisation unavailable", exc_info=True)
    return figures
