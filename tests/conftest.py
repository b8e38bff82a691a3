"""Test isolation: every test session gets its own project state, ZenML store and caches; no network."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="llm-trainer-tests-"))
sys.path.insert(0, str(ROOT))

from llm_trainer.paths import isolated_environment  # noqa: E402 - imports nothing heavy

# Set before anything imports zenml, datasets or huggingface_hub: they read these at import time.
os.environ.update(isolated_environment(_SESSION_DIR))
# Under pytest-xdist (`make test` runs 2 workers) each worker gets its own session folder, as above, and one torch
# thread: two workers with a thread per core each would oversubscribe the cores. An explicit setting wins.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

SAMPLE_DATA = ROOT / "data" / "sample" / "natural_reasoning_sample.jsonl"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture
def sample_rows() -> list[str]:
    return SAMPLE_DATA.read_text().splitlines()


@pytest.fixture
def write_jsonl(tmp_path):
    """Write lines (dicts are JSON-encoded, str/bytes written as they are) to a .jsonl file."""
    import json

    def write(lines, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        with path.open("wb") as handle:
            for line in lines:
                if isinstance(line, dict | list):
                    line = json.dumps(line)
                handle.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
        return path

    return write


@pytest.fixture
def make_config():
    """A RunConfig for the tiny model with overrides given as a nested dict."""
    from llm_trainer.config import RunConfig

    def make(**sections):
        raw = {"name": "test", "data": {"source": str(SAMPLE_DATA), "max_seq_length": 256},
               "model": {"base_model": "tiny-llama"}}
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        return RunConfig.model_validate(raw)

    return make


@pytest.fixture(scope="session")
def tiny_fp32():
    """The quickstart's tiny model in fp32, built offline from the sample data, with its config, tokenizer and
    processed splits. Shared by the whole session: tests that hook or wrap the model must undo it."""
    from types import SimpleNamespace

    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.inference import load_for_inference
    from llm_trainer.base_model import prepare_tokenizer, resolve_base_model

    cfg = load_config(QUICKSTART, ["model.load_in_4bit=false", "model.dtype=float32"])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    model = load_for_inference(cfg.model, resolve_base_model(cfg.model, tokenizer, cfg.seed).name_or_path)
    return SimpleNamespace(cfg=cfg, model=model, tokenizer=tokenizer, processed=processed)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_fp32, tmp_path_factory):
    """A LoRA adapter (non-zero B, so it changes the answers) on the quickstart's tiny model, saved as training
    saves one: weights, tokenizer and the base model's path. Shared by the session: read it, do not change it."""
    import copy
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from llm_trainer.training import LoraAdapter
    from llm_trainer.training.base import ADAPTER_INFO_FILE

    folder = tmp_path_factory.mktemp("tiny-adapter")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        peft_model = get_peft_model(copy.deepcopy(tiny_fp32.model), LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder, safe_serialization=True)
    tiny_fp32.tokenizer.save_pretrained(folder)
    (folder / ADAPTER_INFO_FILE).write_text(json.dumps({"base_model": tiny_fp32.model.name_or_path}))
    return LoraAdapter.from_folder(folder)


@pytest.fixture(scope="session", autouse=True)
def zenml_source_root():
    """Pipelines run in the test process find their steps' sources from the project's root, as `python
    run_pipeline.py` does. ZenML starts from the main module's file, which a pytest-xdist worker's has none of."""
    if not getattr(sys.modules.get("__main__"), "__file__", None):
        from zenml.utils import source_utils

        source_utils.set_custom_source_root(str(ROOT))


# The modules that take longest (minutes each, measured with `make test`'s --durations) start first, one per worker
# (`make test` turns off xdist's ordering by test count): started last, the quickstart's three learning runs alone
# left one worker idle for the last 10 minutes of the suite.
RUN_FIRST = ("test_quickstart_learns.py", "test_full_pipeline.py", "test_train_pipeline.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        name = item.path.name
        return RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_sessionfinish(session, exitstatus):
    """The session's state folder (ZenML store, MLflow database, caches) goes with the session."""
    import shutil

    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture
def scripted_model(tiny_fp32):
    """A stand-in for a causal LM whose output does not depend on training: greedy decoding writes the words of
    ``SCRIPT`` in turn, sampling draws them at random from the global torch generator (so the seed decides), and
    it never stops before ``max_new_tokens``. For tests whose point is what surrounds generation (answer files,
    Ctrl-C in chat), not what a briefly trained model happens to say."""
    import torch

    script = tiny_fp32.tokenizer(" four is the answer to that question and two plus two", add_special_tokens=False)
    words = torch.tensor(script["input_ids"])

    class ScriptedModel(torch.nn.Module):
        config = tiny_fp32.model.config

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # generate_batch reads the device from parameters()

        def generate(self, input_ids, max_new_tokens, do_sample=False, streamer=None, stopping_criteria=None,
                     **_):
            steps = torch.arange(max_new_tokens) % len(words)
            new = words[torch.randint(len(words), (input_ids.shape[0], max_new_tokens))] if do_sample else \
                words[steps].expand(input_ids.shape[0], -1)
            if streamer is None:
                return torch.cat([input_ids, new], dim=1)
            streamer.put(input_ids)
            done = input_ids
            for step in range(max_new_tokens):
                done = torch.cat([done, new[:, step:step + 1]], dim=1)
                streamer.put(new[:, step])
                if stopping_criteria is not None and bool(stopping_criteria(done, None).all()):
                    break
            streamer.end()
            return done

    return ScriptedModel()
