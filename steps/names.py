"""Each step's name in a run (its invocation id), defined once: the pipelines give these ids, the runner and the
CLI look steps up by them."""

FINGERPRINT_SOURCE = "fingerprint_source"
LOAD_DATA = "load_data"
PREPROCESS = "preprocess"
TOKENIZE = "tokenize"
CHECK_SPLITS = "check_splits"
TRAIN = "train_model"
EVALUATE_BASE = "evaluate_base"
EVALUATE_FINETUNED = "evaluate_finetuned"
REGISTER = "register_model"
BASE_MODEL = "prepare_base_model"
LOAD_ADAPTER = "load_adapter"
