from typing import Annotated

from zenml import step

from llm_trainer.training import LoraAdapter
from materializers import LoraAdapterMaterializer


@step(output_materializers=LoraAdapterMaterializer)
def load_adapter(adapter_path: str) -> Annotated[LoraAdapter, "adapter"]:
    """An adapter folder from disk (e.g. --adapter PATH) as a versioned artifact."""
    return LoraAdapter.from_folder(adapter_path)
