"""The registered MLflow version is an MLflow model: it loads by alias, answers, and `mlflow models serve` serves it.

The registration is the register step's own helper (publishing.mlflow_registry.register_in_mlflow) on a tiny LoRA
adapter in a temporary MLflow store, so no training run is needed. The served model runs in another folder with an
empty project home and without the project on its path: the base model folder and the library travel with the model.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from runner.serve import running_server

NAME = "tiny-chat"
QUESTION = "What is 12 + 30?"
MAX_NEW = 12


@pytest.fixture(scope="module")
def adapter(tiny_adapter):
    return tiny_adapter  # conftest's: a LoRA adapter on the quickstart's tiny model, saved as training saves one


@pytest.fixture(scope="module")
def registry(adapter, tiny_fp32, tmp_path_factory):
    """The adapter registered as the register step registers it, promoted: (tracking URI, settings)."""
    import mlflow

    from publishing.mlflow_pyfunc import ChatModelSettings
    from publishing.mlflow_registry import register_in_mlflow

    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("register", artifact_location=(store / "artifacts").as_uri())
    cfg = tiny_fp32.cfg
    settings = ChatModelSettings(cfg.model, cfg.data.system_prompt, MAX_NEW, 4)
    with mlflow.start_run(experiment_id=experiment):
        assert register_in_mlflow(NAME, "zenml-version-1", adapter, {"eval_loss": 1.0}, True, settings) == "1"
        assert register_in_mlflow(NAME, "zenml-version-1", adapter, {"eval_loss": 1.0}, True, settings) == "1"
    yield uri, settings
    mlflow.set_tracking_uri("")


@pytest.fixture(scope="module")
def reference(adapter, tiny_fp32):
    """The greedy answer of the adapter loaded directly (as `use` loads it), with the run's system prompt."""
    from llm_trainer.inference import generate_batch, load_for_inference
    from llm_trainer.modeling import load_tokenizer

    cfg = tiny_fp32.cfg
    model = load_for_inference(cfg.model, adapter.base_model, adapter.path)
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)

    def answer(text: str, max_new: int = MAX_NEW, system: str = cfg.data.system_prompt) -> str:
        conversation = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return generate_batch(model, tokenizer, [conversation], max_new, 1)[0].text
    return answer


def test_the_production_alias_loads_as_a_pyfunc_model_and_answers(registry, reference, adapter, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri = f"models:/{NAME}@production"
    model = mlflow.pyfunc.load_model(uri)
    expected = reference(QUESTION)
    # records in, one answer per row; what the briefly trained adapter says (even nothing) is not the point
    assert isinstance(expected, str) and model.predict([{"prompt": QUESTION}]) == [expected]
    chat = [{"role": "user", "content": QUESTION}]
    two = pd.DataFrame({"prompt": [None, "What is 7 times 6?"], "messages": [chat, None]})
    assert model.predict(two) == [expected, reference("What is 7 times 6?")]
    assert model.predict(two, params={"max_new_tokens": 3}) == [reference(QUESTION, 3),
                                                                reference("What is 7 times 6?", 3)]
    own_system = [{"role": "system", "content": "Answer briefly."}, *chat]  # kept: the run's is not added
    assert model.predict([{"messages": own_system}]) == [reference(QUESTION, system="Answer briefly.")]
    with pytest.raises(MlflowException, match="row 0: the last message must be the user's"):
        model.predict([{"messages": [{"role": "assistant", "content": "hi"}]}])

    # A signature and an input example; the tiny base model travels inside the model folder.
    signature = model.metadata.signature
    assert [c.name for c in signature.inputs.inputs] == ["prompt", "messages"]
    assert signature.params.to_dict()[0] == {"name": "max_new_tokens", "type": "long", "default": MAX_NEW,
                                             "shape": None}
    folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "downloaded")))
    example = mlflow.models.Model.load(str(folder)).load_input_example(str(folder))
    assert example == [{"messages": [{"role": "user", "content": QUESTION}]}]
    flavor = mlflow.models.Model.load(str(folder)).flavors["python_function"]
    assert (folder / flavor["artifacts"]["base_model"]["path"] / "model.safetensors").is_file()
    assert (folder / flavor["artifacts"]["adapter"]["path"] / "adapter_model.safetensors").is_file()
    assert (folder / "code" / "llm_trainer" / "inference.py").is_file()
    version = mlflow.MlflowClient().get_model_version_by_alias(NAME, "production")
    assert version.tags["base_model"] == adapter.base_model and version.tags["zenml_model_version_id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(port: int, body: bytes) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def readme_serve_command(name: str, port: int) -> str:
    """The README's `mlflow models serve` command, as typed, for model ``name`` on ``port``."""
    text = (ROOT / "README.md").read_text()
    start = text.index("MLFLOW_TRACKING_URI=sqlite:///.llm_trainer/mlflow.db")
    start = text.rindex("\n", 0, start) + 1
    command = text[start:text.index("\n", text.index("mlflow models serve", start))]
    assert "models:/quickstart@production" in command and "--port 5001" in command, command
    return command.replace("models:/quickstart@", f"models:/{name}@").replace("--port 5001", f"--port {port}")


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations_on_another_machine(registry, reference, tmp_path):
    """The README's command in a fresh shell (the environment not activated, no PYTHONPATH), typed from a folder
    that has the project's environment and MLflow store but not its code: the library travels with the model."""
    uri, _ = registry
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "home").mkdir(parents=True)
    (elsewhere / ".venv").symlink_to(ROOT / ".venv")
    (elsewhere / ".llm_trainer").symlink_to(Path(uri.removeprefix("sqlite:///")).parent)
    venv_bins = {str(Path(sys.executable).parent), str((ROOT / ".venv" / "bin").resolve()), str(ROOT / ".venv/bin")}
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env.update(LLM_TRAINER_HOME=str(elsewhere / "home"), OMP_WAIT_POLICY="PASSIVE", PWD=str(elsewhere),
               PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p not in venv_bins))
    port = free_port()
    command = ["bash", "-c", readme_serve_command(NAME, port)]
    with running_server(command, port, tmp_path / "mlflow-serve.log", env, start_timeout=240,
                        cwd=elsewhere) as process:
        status, body = post(port, json.dumps({"dataframe_records": [{"prompt": QUESTION}]}).encode())
        assert status == 200 and body == {"predictions": [reference(QUESTION)]}, body
        chat = {"inputs": [{"messages": [{"role": "user", "content": "What is 7 times 6?"}]}],
                "params": {"max_new_tokens": 4}}
        status, body = post(port, json.dumps(chat).encode())
        assert status == 200 and body == {"predictions": [reference("What is 7 times 6?", 4)]}, body
        status, body = post(port, json.dumps({"dataframe_records": [{"prompt": "  "}]}).encode())
        assert status == 400 and "give a non-empty 'prompt' or 'messages'" in body["message"], body
        assert process.poll() is None


def test_the_register_step_serves_with_the_settings_and_card_the_adapter_was_made_with(make_config):
    from llm_trainer.config import ModelVersionSpec
    from llm_trainer.training import LoraAdapter
    from publishing.mlflow_pyfunc import chat_model_settings
    from publishing.mlflow_registry import model_card

    cfg = make_config(model={"load_in_4bit": False, "dtype": "float32"}, data={"system_prompt": "Think."},
                      evaluation={"max_new_tokens": 40, "batch_size": 3})
    spec = cfg.model_version_spec()
    settings = chat_model_settings(spec, LoraAdapter(path=Path("unused"), base_model="/some/base"))
    assert settings.model == cfg.model and settings.model.load_in_4bit is False
    assert (settings.system_prompt, settings.max_new_tokens, settings.batch_size) == ("Think.", 40, 3)
    card = model_card(spec, {"accuracy": 0.5, "eval_loss": 1.2}, {"accuracy": 0.25, "model": "base"},
                      "0123456789abcdef", "3 (production)")
    assert "01234567" in card and "3 (production)" in card and "0.5" in card and "0.25" in card

    bare = ModelVersionSpec(name="m", config_key="k")  # built by hand: the adapter's base, defaults, no card
    settings = chat_model_settings(bare, LoraAdapter(path=Path("unused"), base_model="tiny-llama"))
    assert settings.model.base_model == "tiny-llama" and settings.system_prompt == ""
    assert model_card(bare, {}, {}, "0123456789abcdef", "1") is None
