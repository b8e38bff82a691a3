from typing import Annotated

from zenml import step

from llm_trainer.config import DataConfig
from llm_trainer.data.sources import source_fingerprint


@step(enable_cache=False)
def fingerprint_source(data: DataConfig) -> Annotated[str, "source_fingerprint"]:
    """Hash the source when the run runs (a scheduled run too), never cached: `load_data` is cached on this
    value, so changed data is re-read and everything after it re-runs; unchanged data reuses every step."""
    return source_fingerprint(data)
