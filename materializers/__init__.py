"""ZenML materializers for the project's artifacts: Arrow folders and save_pretrained folders, no pickle."""

from materializers.base_model import BaseModelMaterializer
from materializers.hf_dataset import HFDatasetMaterializer
from materializers.hf_tokenizer import HFTokenizerMaterializer
from materializers.lora_adapter import LoraAdapterMaterializer

__all__ = ["BaseModelMaterializer", "HFDatasetMaterializer", "HFTokenizerMaterializer", "LoraAdapterMaterializer"]
