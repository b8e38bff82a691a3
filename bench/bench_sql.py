"""Execution-scored text-to-SQL examples per second: the project's scorer (SQL extraction, a fresh sandboxed
in-memory SQLite database per example with authorizer, deadline and row/byte caps, gold and predicted query run,
multiset comparison, sqlglot-normalised exact match) against plain sqlite3 on the same pairs (a fresh in-memory
database, the fenced SQL run as it is, fetchall, multiset comparison; no sandbox, no normalisation).

Predictions are made from the shipped sample's gold queries with a fixed seed: 40% the gold query, 10% the gold
query re-spaced and lower-cased, 25% a wrong but valid query, 15% invalid SQL, 10% the gold query in prose without
a fence. A second table times hostile queries (each must be scored wrong, within its deadline).

    .venv/bin/python -m bench.bench_sql [--examples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path

from llm_trainer.evaluation.sql import gold_facts, score_sql

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sql_sample" / "sql_sample.jsonl"
HOSTILE = {
    "ATTACH a system file": "ATTACH DATABASE '/etc/passwd' AS p",
    "endless recursive CTE": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "huge cross join": "SELECT count(*) FROM " + ", ".join(f"t t{i}" for i in range(24)),
    "DROP TABLE": "DROP TABLE t",
    "two statements": "SELECT 1; DROP TABLE t",
    "1 MB query": "SELECT " + "1 + " * 262_144 + "1",
}


def predictions(count: int, seed: int) -> tuple[list[str], list[dict]]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    rng = random.Random(seed)
    picked = [rng.choice(rows) for _ in range(count)]
    out = []
    for row in picked:
        sql, kind = row["sql"], rng.random()
        if kind < 0.4:
            text = f"```sql\n{sql}\n```"
        elif kind < 0.5:
            respaced = "  ".join(sql.split())
            for keyword in ("SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "JOIN"):
                respaced = respaced.replace(keyword, keyword.lower())
            text = f"```sql\n{respaced}\n```"
        elif kind < 0.75:
            wrong = sql.replace(">", "<") if ">" in sql else sql.replace("SELECT", "SELECT DISTINCT 1,", 1)
            text = f"```sql\n{wrong}\n```"
        elif kind < 0.9:
            text = f"```sql\n{sql.replace('FROM', 'FORM', 1)}\n```"
        else:
            text = f"The query is {sql.rstrip(';')}; it answers the question."
        out.append(text)
    return out, picked


def plain_sqlite(prediction: str, gold: str, context: str) -> bool:
    sql = prediction.split("```sql\n", 1)[-1].split("\n```", 1)[0]
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(context)
        expected = db.execute(gold).fetchall()
        try:
            got = db.execute(sql).fetchall()
        except (sqlite3.Error, sqlite3.Warning, ValueError):
            return False
        return Counter(got) == Counter(expected)
    finally:
        db.close()


def main(count: int = 1000, repeats: int = 3) -> dict:
    project, baseline, agree = [], [], []
    for repeat in range(repeats):
        texts, rows = predictions(count, seed=repeat)
        gold_facts.cache_clear()  # cold: no gold query parsed before (a second model evaluated would hit it)
        started = time.perf_counter()
        verdicts = [score_sql(t, r["sql"], r["sql_context"]) for t, r in zip(texts, rows)]
        project.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain = [plain_sqlite(t, r["sql"], r["sql_context"]) for t, r in zip(texts, rows)]
        baseline.append(time.perf_counter() - started)
        fenced = [(v, p) for v, p, t in zip(verdicts, plain, texts) if t.startswith("```")]  # plain cannot extract
        agree.append(sum(v["correct"] == p for v, p in fenced) / len(fenced))
    context = "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2), (3);"
    hostile = {}
    for name, query in HOSTILE.items():
        started = time.perf_counter()
        verdict = score_sql(f"```sql\n{query}\n```", "SELECT a FROM t", context, timeout_seconds=2.0)
        hostile[name] = {"seconds": round(time.perf_counter() - started, 3), "error": verdict["error"],
                         "scored_wrong": not verdict["correct"]}
    result = {
        "examples": count,
        "project_examples_per_s": round(count / statistics.median(project), 1),
        "plain_examples_per_s": round(count / statistics.median(baseline), 1),
        "project_s": round(statistics.median(project), 3), "plain_s": round(statistics.median(baseline), 3),
        "execution_accuracy": round(sum(v["correct"] for v in verdicts) / count, 3),
        "exact_match": round(sum(v["exact_match"] for v in verdicts) / count, 3),
        "verdicts_agree_with_plain": round(min(agree), 4),
        "hostile": hostile,
    }
    print(f"execution-scored text-to-SQL, {count} examples (median of {repeats}): project "
          f"{result['project_examples_per_s']} examples/s ({result['project_s']} s), plain sqlite3 "
          f"{result['plain_examples_per_s']} examples/s ({result['plain_s']} s); verdicts agree on "
          f"{result['verdicts_agree_with_plain']:.1%} of the fenced ones")
    for name, row in hostile.items():
        print(f"  hostile: {name}: {row['error']} in {row['seconds']} s, scored wrong: {row['scored_wrong']}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.examples, args.repeats)
