"""`make quickstart` visibly learns: its exact config, run end to end, raises test accuracy on the sample data's
learnable task families far above the base model's and promotes on accuracy.

Thresholds, from repeated runs of this config on 2 CPU cores (seeds 42, 1, 2, 3 and 4; the config's is 42): on the
41 verifiable learnable-family test rows the fine-tuned model gained 78, 71, 66, 66 and 46 points over the base
model (which scored 0% but for seeds 3 and 4, 2% and 17%; seed 4's base happened to say "odd" or "even" to the
parity questions). Every arithmetic family stayed at or near 0%. The test asks for the issue's goal, a gain of at
least 30 points: below the smallest gain seen, and far below seed 42's, which leaves room for another CPU's
floating-point differences.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_sample_data import LEARNABLE_TASKS, TEMPLATES  # noqa: E402

pytestmark = pytest.mark.slow


def family_accuracy(metrics: dict, families) -> tuple[float, int]:
    """Accuracy over the verifiable test rows of ``families`` (weighted by each family's row count)."""
    counts = {f: metrics.get(f"count_task_{f}", 0) for f in families}
    total = sum(counts.values())
    correct = sum(metrics[f"accuracy_task_{f}"] * n for f, n in counts.items() if n)
    return correct / total, total


def run_quickstart(config: str, summary, *overrides: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """The Makefile's command; only where it writes and the registered name differ (the test store is shared)."""
    home = os.environ["LLM_TRAINER_HOME"]
    return subprocess.run(
        [sys.executable, "run_pipeline.py", "--config", config, "--set", f"output_dir={home}/qs",
         "--set", "registry.model_name=quickstart-learns", "--summary", str(summary),
         *(part for item in overrides for part in ("--set", item))],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def from_the_sft_version(sft_steps: dict) -> str:
    """model.init_adapter set to the quickstart's SFT version by number: production may be another test's version by
    then (GRPO's and DPO's runs register next to it, and either may be promoted)."""
    return f"model.init_adapter={sft_steps['register_model']['model_version']}"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """`make quickstart` once for this module: its output and summary (the GRPO test goes on from its adapter)."""
    summary = tmp_path_factory.mktemp("quickstart") / "summary.json"
    result = run_quickstart("configs/quickstart.yaml", summary)
    assert result.returncode == 0, result.stderr[-4000:]
    return result, json.loads(summary.read_text())["steps"]


def test_the_quickstart_learns_the_short_tasks_and_promotes_on_accuracy(quickstart):
    result, steps = quickstart
    base, tuned = steps["evaluate_base"], steps["evaluate_finetuned"]

    base_learnable, rows = family_accuracy(base, LEARNABLE_TASKS)
    tuned_learnable, same_rows = family_accuracy(tuned, LEARNABLE_TASKS)
    assert rows == same_rows >= 30  # enough rows for a 30-point gain to be more than a handful of answers
    assert tuned_learnable - base_learnable >= 0.30, (base_learnable, tuned_learnable)

    hard = [kind for kind in TEMPLATES if kind not in LEARNABLE_TASKS]
    tuned_hard, hard_rows = family_accuracy(tuned, hard)
    assert hard_rows >= 30 and tuned_hard < tuned_learnable - 0.30  # the report shows a spread by task

    decision = steps["register_model"]
    assert decision["metric"] == "accuracy" and decision["promote"] is True and decision["stage"] == "production"
    assert decision["candidate"] == pytest.approx(tuned["accuracy"]) and decision["base"] == pytest.approx(
        base["accuracy"])
    for family in LEARNABLE_TASKS:  # the summary's per-family table names each family with both models' figures
        line = next(text for text in result.stdout.splitlines() if text.strip().startswith(family + " "))
        assert f"{100 * tuned[f'accuracy_task_{family}']:.1f}%" in line

    # The README's quickstart table was measured with this config: its row counts are exact and its learnable-
    # family figure within 15 points (another CPU's rounding may flip a few greedy answers). Re-measure it when the
    # sample data or the config change.
    readme = (ROOT / "README.md").read_text()
    table = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines()
        if line.startswith("| the four learnable ones") or line.startswith("| the twelve arithmetic"))}
    learnable_row = table["the four learnable ones"]
    assert int(learnable_row[0]) == rows and int(table["the twelve arithmetic and word-problem ones"][0]) == hard_rows
    stated = float(re.match(r"([\d.]+)%", learnable_row[2]).group(1)) / 100
    assert abs(stated - tuned_learnable) <= 0.15, (stated, tuned_learnable)


def test_grpo_with_the_data_sft_term_raises_accuracy_over_the_sft_adapter_and_the_gate_holds(quickstart, tmp_path):
    """configs/grpo_quickstart.yaml whole (the variance filter over 512 prompts, then 200 steps with the SFT term on
    the data's own answers; about 5 minutes here) from the quickstart's SFT version: the reward (the evaluation's judge)
    rises on the kept prompts, test accuracy rises over the SFT adapter's, and the gate follows accuracy and the guard.

    The sweep (README, "SFT then GRPO"; seeds 42, 1, 2) gained 5, 7 and 4 of the 105 verifiable test rows, and 5, 6
    and 5 of the 41 learnable-family rows; the test asks for 3 and 4 (one below the smallest gain seen: another
    CPU's floating-point differences move an answer or two), with seed 42's run."""
    _, sft_steps = quickstart
    summary = tmp_path / "grpo.json"
    result = run_quickstart("configs/grpo_quickstart.yaml", summary, from_the_sft_version(sft_steps))
    assert result.returncode == 0, result.stderr[-4000:]
    steps = json.loads(summary.read_text())["steps"]
    sft, grpo, train = sft_steps["evaluate_finetuned"], steps["evaluate_finetuned"], steps["train_model"]
    assert 0 < train["grpo_variance_filter_kept"] < train["grpo_variance_filter_examined"] == 512
    assert train["global_step"] == 200
    assert train["last_rewards/answer_correct/mean"] > train["first_rewards/answer_correct/mean"]
    assert 0 < train["last_data_sft_loss"] < 5
    sft_learnable, rows = family_accuracy(sft, LEARNABLE_TASKS)
    grpo_learnable, _ = family_accuracy(grpo, LEARNABLE_TASKS)
    test_rows = round(sft["count_single_word"] + sft["count_short"])
    assert round((grpo["accuracy"] - sft["accuracy"]) * test_rows) >= 3, (sft["accuracy"], grpo["accuracy"])
    assert round((grpo_learnable - sft_learnable) * rows) >= 4, (sft_learnable, grpo_learnable)
    assert grpo["extraction_failed"] <= sft["extraction_failed"] + 0.02
    decision = steps["register_model"]
    assert decision["metric"] == "accuracy"
    assert decision["promote"] is (grpo["accuracy"] > decision["production"] and not decision["guards_failed"])


def test_dpo_on_verifier_pairs_runs_end_to_end_with_lineage_and_the_gate_holds(quickstart, tmp_path):
    """configs/dpo_quickstart.yaml end to end from the quickstart's promoted SFT adapter: the build_pairs step makes
    pairs from that adapter's answers (its input is the adapter artifact: SFT version -> pairs -> DPO version), DPO
    trains on them, accuracy does not fall below the SFT adapter's beyond the sweep's spread (README, "SFT then
    DPO"), and the gate's decision follows the accuracy and the guard."""
    from zenml.client import Client

    _, sft_steps = quickstart
    summary = tmp_path / "dpo.json"
    result = run_quickstart("configs/dpo_quickstart.yaml", summary, from_the_sft_version(sft_steps),
                            "training.dpo.pairs_max_questions=384")  # a third of the shipped 1,024, for time
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads(summary.read_text())
    steps = record["steps"]
    pairs, train = steps["build_pairs"], steps["train_model"]
    assert pairs["pairs_questions"] == 384 and pairs["pairs"] > 40
    assert train["dpo_train_pairs"] + train["dpo_pairs_too_long"] == pairs["pairs"] - train["dpo_held_out_pairs"]
    assert train["last_rewards/margins"] > train["first_rewards/margins"]
    assert 0 < train["last_data_sft_loss"] < 1  # the SFT term ran, on the questions' rows the pairs carried
    sft, dpo = sft_steps["evaluate_finetuned"], steps["evaluate_finetuned"]
    sft_learnable, _ = family_accuracy(sft, LEARNABLE_TASKS)
    dpo_learnable, _ = family_accuracy(dpo, LEARNABLE_TASKS)
    assert dpo_learnable >= sft_learnable - 0.10, (sft_learnable, dpo_learnable)
    assert dpo["accuracy"] >= sft["accuracy"] - 0.05, (sft["accuracy"], dpo["accuracy"])
    decision = steps["register_model"]
    assert decision["metric"] == "accuracy"
    assert decision["promote"] is (dpo["accuracy"] > decision["production"] and not decision["guards_failed"])
    run = Client().get_pipeline_run(record["run_id"])  # lineage: the pairs were made from the loaded SFT adapter
    built = run.steps["build_pairs"]
    assert built.inputs["adapter"][0].id == run.steps["load_adapter"].outputs["adapter"][0].id
    assert run.steps["train_model"].inputs["processed_dataset"][0].id == built.outputs["preference_pairs"][0].id
