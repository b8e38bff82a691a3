from llm_trainer.config import RunConfig
from steps import build_pairs, load_adapter
from steps.names import BUILD_PAIRS, LOAD_ADAPTER


def rows_to_train_on(config: RunConfig, processed_dataset, tokenizer, base_model):
    """The processed rows the train step takes: under DPO with ``training.dpo.pairs: verifier``, the pairs the
    starting adapter's answers make (that adapter is loaded as an artifact, so the DPO version's lineage runs from
    the SFT version through the pairs); else the processed splits themselves."""
    training = config.training
    if training.trainer != "dpo" or training.dpo.pairs != "verifier":
        return processed_dataset
    adapter = None
    if config.model.init_adapter is not None:
        adapter = load_adapter(adapter_path=config.model.init_adapter, id=LOAD_ADAPTER)
    pairs, _ = build_pairs(processed_dataset, tokenizer, base_model, spec=config.train_spec(), adapter=adapter,
                           id=BUILD_PAIRS)
    return pairs
