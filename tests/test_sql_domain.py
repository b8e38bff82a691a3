"""Text-to-SQL: the processor keeps only executable rows, the sandbox survives hostile queries, the evaluator
scores by execution, and the quickstart runs end to end by config only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

SAMPLE = ROOT / "data" / "sql_sample" / "sql_sample.jsonl"
CONTEXT = ("CREATE TABLE staff (id INTEGER, name VARCHAR(20), dept VARCHAR(10), pay DECIMAL(10,2)); "
           "INSERT INTO staff VALUES (1, 'Ana', 'IT', 10.5), (2, 'Ben', 'IT', 20.0), (3, 'Cy', 'HR', 30.25);")


def gold(sql: str = "SELECT name FROM staff WHERE dept = 'IT';") -> str:
    return f"Here it is:\n```sql\n{sql}\n```"


# --- the sandbox: model output is hostile input ---------------------------------------------------------------

HOSTILE = {
    "attach": ("ATTACH DATABASE '/etc/passwd' AS p", "denied"),
    "endless_recursive_cte": ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                              "timeout"),
    "endless_rows": ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
                     "too_many_rows"),
    "huge_cross_join": ("SELECT count(*) FROM " + ", ".join(f"staff t{i}" for i in range(24)), "timeout"),
    "drop_table": ("DROP TABLE staff", "denied"),
    "two_statements": ("SELECT 1; DROP TABLE staff", "multiple_statements"),
    "megabyte_query": ("SELECT " + "1 + " * 262_144 + "1", "query_too_long"),
    "pragma": ("PRAGMA database_list", "denied"),
    "load_extension": ("SELECT load_extension('/tmp/evil.so')", "denied"),
    "insert_in_cte": ("WITH a AS (SELECT 1) INSERT INTO staff SELECT 9, 'x', 'x', 1", "denied"),
    "huge_value": ("SELECT zeroblob(2000000000)", "sql_error"),
}


def test_hostile_queries_are_scored_wrong_and_counted_without_hanging():
    from llm_trainer.evaluation.sql import aggregate_sql, score_sql
    from llm_trainer.sql_sandbox import Sandbox

    verdicts = []
    for name, (query, reason) in HOSTILE.items():
        started = time.monotonic()
        verdict = score_sql(gold(query), "SELECT name FROM staff", CONTEXT, timeout_seconds=0.5, max_rows=1000)
        assert time.monotonic() - started < 5, name
        assert verdict["correct"] is False and verdict["valid_sql"] is False, name
        assert verdict["error"] == reason, (name, verdict)
        verdicts.append(verdict)
    metrics = aggregate_sql(verdicts, ["hostile"] * len(verdicts))
    assert metrics["execution_accuracy"] == 0 and metrics["valid_sql"] == 0
    assert metrics["error_denied"] == 5 and metrics["error_timeout"] == 2 and metrics["error_too_many_rows"] == 1
    assert metrics["error_multiple_statements"] == 1 and metrics["error_query_too_long"] == 1
    # In one database, the refused statements changed nothing: the table and its rows are still there.
    with Sandbox(CONTEXT, timeout_seconds=0.5) as sandbox:
        for query, _ in HOSTILE.values():
            sandbox.run(query)
        assert sandbox.run("SELECT count(*) FROM staff").rows == [(3,)]
        assert sandbox.run("SELECT count(*) FROM pragma_database_list").error == "denied"


def test_a_hostile_context_cannot_attach_or_write_files_or_loop(tmp_path):
    from llm_trainer.sql_sandbox import Sandbox

    with Sandbox("ATTACH DATABASE '/etc/passwd' AS p; CREATE TABLE t (a);") as sandbox:
        assert "not authorized" in sandbox.build_error
    with Sandbox(f"CREATE TABLE t (a); VACUUM INTO '{tmp_path / 'copy.db'}';") as sandbox:
        assert sandbox.build_error == "authorization denied" and not (tmp_path / "copy.db").exists()
    started = time.monotonic()
    endless = ("CREATE TABLE t (a); "
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) INSERT INTO t SELECT x FROM c;")
    with Sandbox(endless, timeout_seconds=0.3) as sandbox:
        assert sandbox.build_error == "interrupted" and sandbox.run("SELECT 1").error == "sql_error"
    assert time.monotonic() - started < 3


# --- extraction, comparison, normalisation ---------------------------------------------------------------------

def test_sql_extraction_from_fence_or_first_statement():
    from llm_trainer.evaluation.sql import extract_sql

    assert extract_sql("text\n```sql\nSELECT a FROM t;\n```\nmore") == "SELECT a FROM t;"
    assert extract_sql("```SQL\nSELECT 1") == "SELECT 1"  # unclosed fence at the token limit
    assert extract_sql("The query is SELECT a FROM t WHERE b = 'x;y'; then prose") == "SELECT a FROM t WHERE b = 'x;y'"
    assert extract_sql("with x as (select 1) select * from x\n\nExplanation") == "with x as (select 1) select * from x"
    assert extract_sql("I cannot answer that.") == ""


def test_results_compare_as_multisets_unless_the_gold_orders_them():
    from llm_trainer.evaluation.sql import score_sql

    unordered = "SELECT name FROM staff WHERE dept = 'IT'"
    assert score_sql(gold("SELECT name FROM staff WHERE pay < 25 ORDER BY id DESC"), unordered, CONTEXT)["correct"]
    ordered = "SELECT name FROM staff ORDER BY pay DESC"
    assert not score_sql(gold("SELECT name FROM staff ORDER BY pay"), ordered, CONTEXT)["correct"]
    assert score_sql(gold("SELECT name FROM staff ORDER BY pay * -1"), ordered, CONTEXT)["correct"]
    # Duplicates count (a multiset, not a set); 15.25 == 15.250000000001 after rounding; 30 == 30.0.
    assert not score_sql(gold("SELECT DISTINCT dept FROM staff"), "SELECT dept FROM staff", CONTEXT)["correct"]
    assert score_sql(gold("SELECT AVG(pay) + 0.000000000001 FROM staff WHERE dept = 'IT'"),
                     "SELECT AVG(pay) FROM staff WHERE dept = 'IT'", CONTEXT)["correct"]
    assert score_sql(gold("SELECT 30.0"), "SELECT 30", CONTEXT)["correct"]
    wrong = score_sql(gold("SELECT name FROM staff"), unordered, CONTEXT)
    assert wrong["valid_sql"] and not wrong["correct"] and wrong["error"] is None


def test_exact_match_on_normalised_sql():
    from llm_trainer.evaluation.sql import normalize_sql, score_sql

    assert normalize_sql("select  NAME from Staff where DEPT='IT'") == normalize_sql(
        "SELECT name FROM staff WHERE dept = 'IT';")
    assert normalize_sql("SELECT 'IT'") != normalize_sql("SELECT 'it'")  # literals keep their case
    assert normalize_sql("SELEC nonsense ((") is None
    verdict = score_sql(gold("select  NAME from Staff where DEPT='IT'"), "SELECT name FROM staff WHERE dept = 'IT'",
                        CONTEXT)
    assert verdict["exact_match"] and verdict["correct"]
    verdict = score_sql(gold("SELECT name FROM staff WHERE dept IN ('IT')"), "SELECT name FROM staff WHERE dept = 'IT'",
                        CONTEXT)
    assert verdict["correct"] and not verdict["exact_match"]


def test_metrics_per_complexity():
    from llm_trainer.evaluation.sql import aggregate_sql, score_sql

    right = score_sql(gold(), "SELECT name FROM staff WHERE dept = 'IT'", CONTEXT)
    wrong = score_sql(gold("SELECT nam FROM staff"), "SELECT name FROM staff", CONTEXT)
    none = score_sql("no idea", "SELECT name FROM staff", CONTEXT)
    metrics = aggregate_sql([right, wrong, none], ["basic SQL", "basic SQL", "window functions"])
    assert metrics["execution_accuracy"] == pytest.approx(1 / 3) and metrics["valid_sql"] == pytest.approx(1 / 3)
    assert metrics["execution_accuracy.basic_sql"] == 0.5 and metrics["count.basic_sql"] == 2
    assert metrics["execution_accuracy.window_functions"] == 0 and metrics["no_sql_found"] == 1
    assert metrics["error_sql_error"] == 1 and metrics["examples"] == 3


# --- the processor --------------------------------------------------------------------------------------------

def sql_row(**fields):
    row = {"sql_prompt": "Names in IT?", "sql_context": CONTEXT, "sql": "SELECT name FROM staff WHERE dept = 'IT';",
           "sql_explanation": "Filters staff on dept.", "sql_complexity": "basic SQL", "domain": "hr"}
    return {**row, **fields}


def test_processor_drops_and_counts_rows_that_do_not_execute_and_transpiles_other_dialects(make_config, write_jsonl):
    from llm_trainer.data import build_processor

    rows = [
        sql_row(),
        sql_row(sql_prompt="Top paid?", sql="SELECT TOP 1 name FROM staff ORDER BY pay DESC"),  # T-SQL
        sql_row(sql_prompt="Broken context", sql_context="CREATE TABLE (oops"),
        sql_row(sql_prompt="Missing column", sql="SELECT salary FROM staff"),
        sql_row(sql_prompt="A write", sql="DELETE FROM staff"),
        sql_row(sql_prompt="No SQL", sql=""),
        sql_row(sql_prompt="Lower pay?", sql="SELECT name FROM staff WHERE pay < 25", sql_complexity=None),
    ]
    cfg = make_config(data={"processor": "sql", "source": str(write_jsonl(rows)), "sql_dialect": "tsql",
                            "splits": {"train": 0.5, "validation": 0.0, "test": 0.5}})
    processor = build_processor(cfg.data)
    processed, report = processor.preprocess(processor.load())
    assert report["rows_kept"] == 3 and report["gold_transpiled"] == 1 and report["sql_dialect"] == "tsql"
    assert report["dropped"] == {"context_does_not_build": 1, "gold_query_fails": 1, "gold_not_a_single_select": 1,
                                 "missing_sql": 1}
    kept = {r["question"]: r for split in processed.values() for r in split}
    assert kept["Top paid?"]["reference_answer"] == "SELECT name FROM staff ORDER BY pay DESC LIMIT 1"
    assert kept["Top paid?"]["gold_transpiled"] and not kept["Names in IT?"]["gold_transpiled"]
    assert kept["Lower pay?"]["sql_complexity"] == "unknown"
    system, user, assistant = kept["Names in IT?"]["messages"]
    assert system["role"] == "system" and "SQLite" in system["content"]  # not the reasoning default
    assert CONTEXT in user["content"] and user["content"].endswith("Question: Names in IT?")
    assert assistant["content"] == "```sql\nSELECT name FROM staff WHERE dept = 'IT';\n```"
    assert kept["Names in IT?"]["sql_context"] == CONTEXT

    with_explanation = make_config(data={**cfg.data.model_dump(), "sql_with_explanation": True}).data
    one_row = {"row_id": [1], **{k: [v] for k, v in sql_row().items()}}
    formatted = build_processor(with_explanation).format_batch(one_row)
    assert formatted["messages"][0][-1]["content"].startswith("Filters staff on dept.\n\n```sql\n")
    # Without a dialect to transpile from, the T-SQL query is dropped.
    plain = make_config(data={**cfg.data.model_dump(), "sql_dialect": "sqlite"}).data
    assert build_processor(plain).format_batch(
        {"row_id": [1], **{k: [v] for k, v in sql_row(sql="SELECT TOP 1 name FROM staff").items()}}
    )["drop_reason"] == ["gold_query_fails"]


def test_shipped_sample_every_gold_query_executes(make_config):
    from llm_trainer.data import build_processor
    from llm_trainer.evaluation.sql import score_sql

    cfg = make_config(data={"processor": "sql", "source": str(SAMPLE)})
    processor = build_processor(cfg.data)
    processed, report = processor.preprocess(processor.load())
    assert report["rows_read"] == report["rows_kept"] >= 2000 and report["dropped"] == {}
    contexts = {c for split in processed.values() for c in split["sql_context"]}
    assert 24 <= len(contexts) <= 60
    test = processed["test"]
    assert len(set(test["sql_complexity"])) >= 4
    verdicts = [score_sql(messages[-1]["content"], gold_sql, context)
                for messages, gold_sql, context in zip(test["messages"], test["reference_answer"], test["sql_context"])]
    assert all(v["correct"] and v["exact_match"] for v in verdicts)  # the targets score perfectly


def test_promotion_metric_must_be_an_sql_metric(make_config):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    for name in ("sql.yaml", "sql_quickstart.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.registry.promotion_metric == "execution_accuracy" and cfg.evaluation.evaluator == "sql"
    with pytest.raises(ConfigError, match="not a metric of the sql evaluator"):
        load_config(ROOT / "configs" / "sql_quickstart.yaml", ["registry.promotion_metric=accuracy"])
    with pytest.raises(ConfigError, match="data.sql_dialect: unknown SQL dialect"):
        load_config(ROOT / "configs" / "sql_quickstart.yaml", ["data.sql_dialect=klingon"])


# --- end to end, by config only ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sql_quickstart_full_pipeline(tmp_path):
    summary = tmp_path / "summary.json"
    small = ["data.max_samples=240", "data.max_seq_length=448", "training.max_steps=3", "training.eval_steps=3",
             "evaluation.max_samples=4", "evaluation.max_new_tokens=32", "model.tiny.pretrain_max_tokens=20000",
             "registry.model_name=sql-quickstart-test", f"output_dir={os.environ['LLM_TRAINER_HOME']}/outputs"]
    command = [sys.executable, "run_pipeline.py", "full", "--config", "configs/sql_quickstart.yaml",
               "--summary", str(summary)] + [arg for item in small for arg in ("--set", item)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    steps = json.loads(summary.read_text())["steps"]
    assert steps["preprocess"]["rows_read"] == 240 and steps["preprocess"]["dropped"] == {}
    for name in ("evaluate_base", "evaluate_finetuned"):
        metrics = steps[name]
        assert metrics["examples"] == 4 and 0 <= metrics["execution_accuracy"] <= metrics["valid_sql"] + 1e-9
        counted = metrics["no_sql_found"] + sum(v for k, v in metrics.items() if k.startswith("error_"))
        assert counted == round(4 * (1 - metrics["valid_sql"]))  # every invalid prediction has a reason
        assert sum(v for k, v in metrics.items() if k.startswith("count.")) == 4
    decision = steps["register_model"]
    assert decision["metric"] == "execution_accuracy"
    assert decision["candidate"] == pytest.approx(steps["evaluate_finetuned"]["execution_accuracy"])


def test_shipped_samples_are_what_the_generators_write(tmp_path):
    for script, args, shipped in (
            ("make_sql_sample.py", ["--out", str(tmp_path / "sql.jsonl")], {"sql.jsonl": SAMPLE}),
            ("make_chat_sample.py", ["--out", str(tmp_path)],
             {name: ROOT / "data" / "chat_sample" / name for name in ("messages.jsonl", "alpaca.jsonl",
                                                                       "sharegpt.jsonl")})):
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], check=True, capture_output=True)
        for name, path in shipped.items():
            assert (tmp_path / name).read_bytes() == path.read_bytes(), script
