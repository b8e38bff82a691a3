from typing import Annotated, Any

import datasets
from transformers import PreTrainedTokenizerBase
from zenml import log_metadata, step

from llm_trainer.base_model import BaseModelRef
from llm_trainer.config import TrainSpec
from llm_trainer.training import LoraAdapter
from llm_trainer.training.pairs import pairs_from_adapter, with_term_rows


@step
def build_pairs(
    processed_dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    base_model: BaseModelRef,
    spec: TrainSpec,
    adapter: LoraAdapter | None = None,
) -> tuple[Annotated[datasets.DatasetDict, "preference_pairs"], Annotated[dict[str, Any], "pairs_report"]]:
    """Preference pairs for DPO: the starting adapter (``model.init_adapter``; the base model when none) answers the
    train questions, the verifier judges the answers, a correct and a wrong one make a pair; counts by outcome. With
    ``training.dpo.data_sft_weight`` the questions' own answers go along, for the SFT term."""
    pairs, counts = pairs_from_adapter(spec, processed_dataset, tokenizer, base_model.name_or_path,
                                       str(adapter.path) if adapter else None)
    log_metadata(metadata=counts)
    return with_term_rows(pairs, processed_dataset, spec), counts
