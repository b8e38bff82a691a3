"""ZenML materializers for the project's artifacts: Arrow folders and save_pretrained folders, no pickle."""

from materializers.hf_dataset import HFDatasetMaterializer
from materializers.hf_tokenizer import HFTokenizerMaterializer

__all__ = ["HFDatasetMaterializer", "HFTokenizerMaterializer"]
