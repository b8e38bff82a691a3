"""The full workflow through the CLI: train, evaluate base and fine-tuned, register, promote, use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

FAST = ["--config", "configs/quickstart.yaml", "--set", "training.num_train_epochs=1", "--set", "evaluation.max_samples=16",
        "--set", "evaluation.max_new_tokens=48", "--set", "registry.model_name=quickstart-test",
        "--set", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs",
        "--set", "registry.promotion_metric=eval_loss"]  # one epoch moves the loss before the answers
WORSE = ["--set", "training.learning_rate=1e-5", "--set", "training.max_steps=2"]


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "summary.json"
    result = run_cli("full", *FAST, "--summary", str(path))
    assert result.returncode == 0, result.stderr[-4000:]
    return {**json.loads(path.read_text()), "stdout": result.stdout}


def test_full_run_evaluates_both_models_and_promotes(promoted):
    steps = promoted["steps"]
    assert sorted(steps) == sorted(["fingerprint_source", "load_data", "preprocess", "tokenize", "check_splits",
                                    "prepare_base_model", "train_model", "evaluate_base", "evaluate_finetuned", "register_model"])
    base, tuned = steps["evaluate_base"], steps["evaluate_finetuned"]
    assert tuned["eval_loss"] < base["eval_loss"]
    assert base["examples"] == tuned["examples"] == 16
    assert base["scored"] + base["no_reference"] == 16
    decision = steps["register_model"]
    assert decision["promote"] is True and decision["stage"] == "production"
    assert decision["metric"] == "eval_loss" and decision["candidate"] == pytest.approx(tuned["eval_loss"])

    from zenml.client import Client
    from zenml.enums import ModelStages

    version = Client().get_model_version("quickstart-test", ModelStages.PRODUCTION)
    assert version.run_metadata["evaluation_metrics"]["eval_loss"] == pytest.approx(tuned["eval_loss"])
    assert {t.name for t in version.tags} >= {"quickstart", "tiny-llama"}  # zenml.tags of the config
    # The version was created by the run's register step, which linked every artifact the run had made.
    run_fingerprint = Client().get_pipeline_run(promoted["run_id"]).steps["fingerprint_source"].outputs[
        "source_fingerprint"][0].load()
    assert version.run_metadata["source_fingerprint"] == run_fingerprint
    for name in ("raw_dataset", "processed_dataset", "tokenized_dataset", "tokenizer", "base_model",
                 "training_metrics", "evaluation_examples"):
        assert version.get_artifact(name) is not None, name
    assert version.name.endswith(run_fingerprint[:8])
    assert promoted["run_id"] in {str(i) for i in version.pipeline_run_ids.values()}
    # Lineage: from the registered adapter back through every producing step to the raw data's fingerprint.
    chain, artifact = [], version.get_artifact("adapter")
    while artifact is not None:
        producer = Client().get_run_step(artifact.producer_step_run_id)
        chain.append(producer.name)
        upstream = [producer.inputs[n][0] for n in ("tokenized_dataset", "processed_dataset", "raw_dataset",
                                                    "source_fingerprint") if n in producer.inputs]
        artifact = upstream[0] if upstream else None
    assert chain == ["train_model", "tokenize", "preprocess", "load_data", "fingerprint_source"]
    pipeline_run = Client().get_pipeline_run(promoted["run_id"])
    report = pipeline_run.steps["evaluate_finetuned"].outputs["evaluation_report"][0]
    assert "Worst examples" in report.load() and report.visualizations
    comparison = pipeline_run.steps["register_model"].outputs["promotion_report"][0].load()
    assert "promoted to production" in comparison and "base" in comparison and "fine-tuned" in comparison
    assert f"{tuned['eval_loss']:.4g}" in comparison and f"{base['eval_loss']:.4g}" in comparison
    versions = pipeline_run.steps["register_model"].outputs["versions_comparison"][0].load()
    assert f"<td>{tuned['eval_loss']:.4g} (base {base['eval_loss']:.4g})</td>" in versions  # models compare as HTML
    assert "<td>production</td>" in versions and "<td>qlora</td>" in versions and "data:image/png" in versions
    for step_run in pipeline_run.steps.values():  # evaluation tables, reports and decisions too: no pickle
        for versions in step_run.outputs.values():
            for artifact in versions:
                assert "pickle" not in artifact.materializer.import_path.lower(), (step_run.name, artifact.name)

    # The per-example table: one row per evaluated test question; rows without a reference are not scored.
    tables = {}
    for name, metrics in (("evaluate_base", base), ("evaluate_finetuned", tuned)):
        table = tables[name] = pipeline_run.steps[name].outputs["evaluation_examples"][0].load()
        assert len(table) == 16
        assert {"question", "reference", "generation", "extracted", "correct", "scored"} <= set(table.column_names)
        no_reference = [not r.strip() for r in table["reference"]]
        assert table["scored"] == [not empty for empty in no_reference]
        assert sum(no_reference) == metrics["no_reference"] and metrics["scored"] == 16 - sum(no_reference)
        scored = [c for c, s in zip(table["correct"], table["scored"]) if s]
        assert metrics["accuracy"] == pytest.approx(sum(scored) / len(scored))
    assert tables["evaluate_base"]["question"] == tables["evaluate_finetuned"]["question"]  # the same test rows
    # The same instruction for both models, and it asks for the final-answer line.
    prompts = set(tables["evaluate_base"]["system_prompt"]) | set(tables["evaluate_finetuned"]["system_prompt"])
    assert len(prompts) == 1 and "Final answer:" in prompts.pop()
    # Per answer type: counts match the table, and every scored row names its type and its judge.
    for name, metrics in (("evaluate_base", base), ("evaluate_finetuned", tuned)):
        table = tables[name]
        for kind in ("none", "single_word", "short", "long"):
            assert metrics[f"count_{kind}"] == table["answer_type"].count(kind), (name, kind)
        assert all(j for j, s in zip(table["judge"], table["scored"]) if s)
        verifiable = [c for c, t in zip(table["correct"], table["answer_type"]) if t in ("single_word", "short")]
        assert metrics["accuracy"] == pytest.approx(sum(verifiable) / len(verifiable))
        failed = [f for f, s in zip(table["extraction_failed"], table["scored"]) if s]
        assert metrics["extraction_failed"] == pytest.approx(sum(failed) / len(failed))
        # Per task family (the sample data's task column): every verifiable row is counted in its family.
        families = {t for t, k in zip(table["task"], table["answer_type"]) if k in ("single_word", "short")}
        assert families and "" not in families
        for family in families:
            rows = [c for c, t, k in zip(table["correct"], table["task"], table["answer_type"])
                    if t == family and k in ("single_word", "short")]
            assert metrics[f"count_task_{family}"] == len(rows)
            assert metrics[f"accuracy_task_{family}"] == pytest.approx(sum(rows) / len(rows))
    assert "By answer type" in report.load() and "Who decided" in report.load()
    assert "Accuracy by task family" in report.load() and "Accuracy by task family" in comparison
    assert "test accuracy by task family" in promoted["stdout"]
    assert "By answer type" in comparison and "no answer could be extracted from" in decision["reason"]
    assert "test answers by type" in promoted["stdout"] and "no answer extracted" in promoted["stdout"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(os.environ['LLM_TRAINER_HOME']) / 'mlflow.db'}")
    logged = {key for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
              for key in run.data.metrics}
    assert {"fine-tuned.count_single_word", "base.accuracy_single_word", "fine-tuned.extraction_failed"} <= logged
    registered = client.get_model_version_by_alias("quickstart-test", "production")
    assert registered.tags["base_model"] and float(registered.tags["metric.eval_loss"]) == pytest.approx(
        tuned["eval_loss"], rel=1e-5)
    card = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{registered.source}/README.md",
                                                    tracking_uri=client.tracking_uri)).read_text()
    assert "# quickstart" in card and "production" in card and "Base model" in card  # the version's model card


def test_unchanged_rerun_is_cached_and_registers_no_duplicate_version(promoted, tmp_path):
    from zenml.client import Client

    before = Client().list_model_versions("quickstart-test", size=100).total
    path = tmp_path / "again.json"
    result = run_cli("full", *FAST, "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(path.read_text())["steps"]
    assert steps.pop("fingerprint_source")["status"] == "completed"  # the data is hashed on every run
    assert {s["status"] for s in steps.values()} == {"cached"}
    assert Client().list_model_versions("quickstart-test", size=100).total == before


def test_processing_again_without_cache_reruns_no_training_or_evaluation(promoted, tmp_path):
    """`process --no-cache` saves the same data again as new artifacts; ZenML's cache keys use their content, so a
    following `full` is cached from training on. `train --no-cache` re-runs the step, which finds the finished run
    and reports its figures (it used to report a mean loss of 0 and 0 tokens/s)."""
    processed, full, train = tmp_path / "process.json", tmp_path / "full.json", tmp_path / "train.json"
    result = run_cli("process", *FAST, "--no-cache", "--summary", str(processed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _statuses(processed)["tokenize"] == "completed"
    result = run_cli("full", *FAST, "--summary", str(full))
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = _statuses(full)
    assert {statuses[name] for name in ("train_model", "evaluate_base", "evaluate_finetuned", "register_model")} \
        == {"cached"}, statuses

    result = run_cli("train", *FAST, "--no-cache", "--summary", str(train))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished before (same config, data and seed)" in result.stdout + result.stderr
    figures, first = json.loads(train.read_text())["steps"]["train_model"], promoted["steps"]["train_model"]
    assert figures["status"] == "completed" and figures["reused_finished_run"] == 1
    for key in ("global_step", "train_tokens_per_second", "eval_loss", "train_loss", "run_dir"):
        assert figures[key] == first[key], key


def _statuses(path: Path) -> dict[str, str]:
    return {name: step["status"] for name, step in json.loads(path.read_text())["steps"].items()}


def test_each_step_reruns_only_when_a_section_it_reads_changes(promoted, tmp_path):
    """Steps get only the config sections they read: a registry change re-runs the registration alone, and an
    evaluation change re-runs the evaluations (and registration) but not training."""
    margin, samples = tmp_path / "margin.json", tmp_path / "samples.json"
    result = run_cli("full", *FAST, "--set", "registry.promotion_margin=0.5", "--summary", str(margin))
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = {name for name, status in _statuses(margin).items() if status == "completed"}
    assert rerun == {"fingerprint_source", "register_model"}
    decision = json.loads(margin.read_text())["steps"]["register_model"]
    assert decision["promote"] is False  # the same adapter cannot beat itself by a margin of 0.5

    result = run_cli("full", *FAST, "--set", "evaluation.max_samples=4", "--summary", str(samples))
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = _statuses(samples)
    assert statuses["train_model"] == statuses["prepare_base_model"] == statuses["tokenize"] == "cached"
    assert statuses["evaluate_base"] == statuses["evaluate_finetuned"] == statuses["register_model"] == "completed"


def test_a_scheduled_pipeline_names_its_version_when_it_runs(tmp_path):
    """A schedule compiles the pipeline once; each run must name its model version from the data it read: changed
    data adds a version, unchanged data adds none (the same configured pipeline object called three times)."""
    import shutil

    from zenml.client import Client

    from llm_trainer.config import load_config
    from runner.run import configure_run

    source = tmp_path / "data.jsonl"
    shutil.copy(ROOT / "data" / "sample" / "natural_reasoning_sample.jsonl", source)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        f"data.source={source}", "training.max_steps=2", "training.eval_steps=2", "training.save_steps=2",
        "evaluation.max_samples=2", "evaluation.max_new_tokens=8", "registry.model_name=scheduled-test",
        "model.tiny.pretrain_max_tokens=20000",  # changed data builds another base model: the short build
        f"output_dir={tmp_path}/outputs"])
    configured, params = configure_run("full", cfg)

    def versions() -> list[str]:
        return sorted(v.name for v in Client().list_model_versions("scheduled-test", size=100).items)

    configured(**params)
    first = versions()
    lines = source.read_text().splitlines()
    source.write_text("\n".join(lines[: len(lines) * 3 // 4]) + "\n")  # the data changed before the next run
    configured(**params)
    second = versions()
    configured(**params)  # nothing changed since
    assert len(first) == 1 and len(second) == 2 and versions() == second
    assert first[0] in second


def test_grpo_goes_on_from_the_production_sft_adapter_through_the_train_command(promoted, tmp_path):
    """configs/grpo_quickstart.yaml through the train pipeline: model.init_adapter 'production' is the promoted
    SFT version's adapter, and the GRPO trainer gets the processed rows (prompts and references)."""
    path = tmp_path / "grpo.json"
    result = run_cli("train", "--config", "configs/grpo_quickstart.yaml", "--set", "registry.model_name=quickstart-test",
                     "--set", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs", "--set", "training.logging_steps=1",
                     "--set", "training.max_steps=2", "--set", "training.grpo.num_generations=2",
                     "--set", "training.grpo.variance_filter_samples=0", "--set", "training.gradient_accumulation_steps=1",
                     "--set", "training.per_device_train_batch_size=4", "--set", "training.grpo.max_completion_length=8",
                     "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(path.read_text())["steps"]["train_model"]
    assert metrics["global_step"] == 2 and metrics["grpo_rows_without_verifiable_reference"] > 0

    from runner.models import adapter_of_version

    production = adapter_of_version("quickstart-test", "production").path
    from zenml.client import Client

    run = Client().get_pipeline_run(json.loads(path.read_text())["run_id"])
    assert run.config.parameters["config"]["model"]["init_adapter"] == str(production)
    missing = run_cli("train", "--config", "configs/grpo_quickstart.yaml", "--set", "registry.model_name=nothing-here")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith(
        "error: model.init_adapter: ")


def test_worse_run_stays_in_staging(promoted, tmp_path):
    path = tmp_path / "worse.json"
    result = run_cli("full", *FAST, *WORSE, "--summary", str(path))
    assert result.returncode == 0, result.stderr[-4000:]
    decision = json.loads(path.read_text())["steps"]["register_model"]
    assert decision["promote"] is False and decision["stage"] == "staging"
    # Two steps at a tiny learning rate: worse than production, and maybe not even better than the base model.
    # The reason must name the comparison that failed first (eval_loss: lower is better).
    assert decision["production"] == pytest.approx(promoted["steps"]["evaluate_finetuned"]["eval_loss"])
    assert decision["candidate"] > decision["production"]
    failed_first = "the base model's" if decision["candidate"] >= decision["base"] else "production's"
    assert f"does not beat {failed_first}" in decision["reason"]

    from zenml.client import Client
    from zenml.enums import ModelStages

    production = Client().get_model_version("quickstart-test", ModelStages.PRODUCTION)
    assert str(production.number) == promoted["steps"]["register_model"]["model_version"]


def test_use_answers_from_the_production_version(promoted, tmp_path):
    one = run_cli("use", *FAST, "--model-version", "production", "--prompt", "What is 12 + 30?")
    assert one.returncode == 0, one.stderr[-3000:]
    # The answer is the production adapter's own greedy answer, loaded here directly, and not the base model's.
    from llm_trainer.chat import base_messages
    from llm_trainer.config import load_config
    from llm_trainer.inference import generate_batch, load_for_inference
    from llm_trainer.modeling import load_tokenizer
    from runner.models import adapter_of_version

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [a for a in FAST[3::2]])
    adapter = adapter_of_version("quickstart-test", promoted["steps"]["register_model"]["model_version"])
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    conversation = base_messages(cfg.data.system_prompt) + [{"role": "user", "content": "What is 12 + 30?"}]

    def greedy(adapter_path):
        model = load_for_inference(cfg.model, adapter.base_model, adapter_path)
        return generate_batch(model, tokenizer, [conversation], cfg.evaluation.max_new_tokens, 1)[0].text

    tuned = greedy(adapter.path)
    assert tuned.strip() and one.stdout.strip().endswith(tuned.strip())  # library warnings may come before it
    assert greedy(None).strip() != tuned.strip()

    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "What is 2 + 2?"}\nnot json\n{"prompt": "   "}\n"What is 9 - 4?"\n')
    out = tmp_path / "out.jsonl"
    batch = run_cli("use", *FAST, "--model-version", "production", "--input", str(source), "--output", str(out))
    assert batch.returncode == 0, batch.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["error"] == "invalid JSON" and rows[2]["error"] == "empty prompt"
    assert "response" in rows[0] and "response" in rows[3]
    assert "line 2: invalid JSON" in batch.stderr


def test_use_interactive_chat(promoted):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["run_pipeline.py", "use", *FAST, "--model-version", "production",
                                           "--interactive"], cwd=str(ROOT), env=dict(os.environ),
                          encoding="utf-8", timeout=300)
    try:
        child.expect_exact("/exit quits.")
        child.expect_exact("you> ")
        child.sendline("What is 5 + 6?")
        child.expect_exact("assistant> ")
        child.expect_exact("you> ")
        child.sendline("/reset")
        child.expect_exact("(conversation cleared)")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_merge_writes_a_loadable_full_model(promoted, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runner.models import adapter_of_version

    adapter = adapter_of_version("quickstart-test", "production")
    merged_dir = tmp_path / "merged"
    result = run_cli("use", *FAST, "--adapter", str(adapter.path), "--merge", str(merged_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter.base_model,
                                                                               dtype=torch.float32), adapter.path)
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference.eval()(ids).logits, atol=1e-4)


def test_evaluate_command_with_a_model_version(promoted, tmp_path):
    path = tmp_path / "evaluate.json"
    result = run_cli("evaluate", *FAST, "--model-version", "production", "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(path.read_text())
    assert summary["pipeline"] == "evaluate_pipeline"
    assert summary["steps"]["evaluate_finetuned"]["examples"] == 16
    production_loss = promoted["steps"]["evaluate_finetuned"]["eval_loss"]
    assert summary["steps"]["evaluate_finetuned"]["eval_loss"] == pytest.approx(production_loss, rel=1e-4)


def test_evaluate_command_with_an_adapter_folder(promoted, tmp_path):
    from runner.models import adapter_of_version

    adapter = adapter_of_version("quickstart-test", "production")
    path = tmp_path / "evaluate.json"
    result = run_cli("evaluate", *FAST, "--adapter", str(adapter.path), "--summary", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(path.read_text())["steps"]["evaluate_finetuned"]
    assert evaluated["eval_loss"] == pytest.approx(promoted["steps"]["evaluate_finetuned"]["eval_loss"], rel=1e-4)


def test_unknown_model_version_is_one_line():
    result = run_cli("use", *FAST, "--model-version", "99", "--prompt", "hi")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("error: --model-version: model 'quickstart-test' has no version")
