"""SQL extraction from unfenced model output (issue 33 §3) and MySQL/PostgreSQL date functions in gold queries.

Unfenced: prose after the query is left out, a statement before or after it reaches the sandbox (wrong, counted),
a fenced query with prose around it stays right. Gold queries: date functions are rewritten for SQLite, or the row
is dropped with the name of the function SQLite lacks.
"""

from __future__ import annotations

import time

import pytest

CONTEXT = ("CREATE TABLE employees (id INTEGER, name TEXT, salary REAL, hired DATE, seen DATETIME); "
           "INSERT INTO employees VALUES (1, 'Ana', 10.0, '2020-01-02', '2020-01-02 08:30:15'), "
           "(2, 'Ben', 20.0, '2021-05-17', '2021-05-17 13:45:30'), "
           "(3, 'Cy', 30.0, '2021-11-30', '2021-11-30 23:00:00');")
COUNT = "SELECT COUNT(*) FROM employees"
AVERAGE = "SELECT AVG(salary) FROM employees"


# --- prose around unfenced SQL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("generation, expected", [
    ("Here is the query:\nSELECT AVG(salary) FROM employees\nThis returns the average.", AVERAGE),
    ("Here is the query:\nSELECT AVG(salary)\nFROM employees;\nThis returns the average; it's in dollars.",
     "SELECT AVG(salary)\nFROM employees;"),
    ("Here is the query with a join:\nSELECT AVG(salary) FROM employees\n\nExplanation: values are averaged.", AVERAGE),
    ("with x as (select 1) select * from x\n\nExplanation", "with x as (select 1) select * from x"),
    ("We select the salary from employees.\nSELECT AVG(salary) FROM employees", AVERAGE),
    ("Let me create a query that averages:\nSELECT AVG(salary) FROM employees\nIt is the mean.", AVERAGE),
    ("The query is SELECT a FROM t WHERE b = 'x;y'; then prose", "SELECT a FROM t WHERE b = 'x;y'"),
    ("First I select the rows; then I average them.\nSELECT AVG(salary) FROM employees", AVERAGE),
    ("I cannot answer that.", ""),
])
def test_prose_after_unfenced_sql_is_left_out(generation, expected):
    from llm_trainer.evaluation.sql import extract_sql

    assert extract_sql(generation) == expected


def test_a_right_unfenced_answer_with_prose_after_it_scores_right():
    from llm_trainer.evaluation.sql import score_sql

    generation = "Here is the query:\nSELECT AVG(salary) FROM employees\nThis returns the average."
    verdict = score_sql(generation, AVERAGE, CONTEXT)
    assert verdict["correct"] and verdict["valid_sql"] and verdict["exact_match"] and verdict["error"] is None


# --- statements before or after the query ----------------------------------------------------------------------

BEFORE_OR_AFTER = {
    "attach_before": (f"ATTACH DATABASE 'other.db' AS p; {COUNT}", "denied"),
    "pragma_line_before": (f"PRAGMA table_info(employees);\n{COUNT}", "denied"),
    "vacuum_before": (f"VACUUM; {COUNT}", "multiple_statements"),
    "attach_in_prose_before": (f"Sure! attach database 'x.db' AS p;\n{COUNT}", "denied"),
    "delete_after": (f"{COUNT}; DELETE FROM employees", "multiple_statements"),
    "select_after": ("SELECT 5; DELETE FROM employees", "multiple_statements"),
    "drop_after_blank_line": (f"{COUNT};\n\nDROP TABLE employees;", "multiple_statements"),
    "delete_next_line": (f"Sure:\n{COUNT}\nDELETE FROM employees", "sql_error"),
}


@pytest.mark.parametrize("name", BEFORE_OR_AFTER)
def test_a_statement_before_or_after_the_query_makes_it_wrong(name):
    from llm_trainer.evaluation.sql import extract_sql, score_sql

    generation, reason = BEFORE_OR_AFTER[name]
    assert "employees" in extract_sql(generation) and ("DELETE" in extract_sql(generation)) == ("DELETE" in generation)
    verdict = score_sql(generation, COUNT, CONTEXT)
    assert verdict["correct"] is False and verdict["valid_sql"] is False
    assert verdict["error"] == reason, verdict


def test_hostile_unfenced_answers_are_counted_not_skipped():
    from llm_trainer.evaluation.sql import aggregate_sql, score_sql

    verdicts = [score_sql(generation, COUNT, CONTEXT) for generation, _ in BEFORE_OR_AFTER.values()]
    verdicts.append(score_sql(f"Here you go:\n{COUNT}\nThat counts them.", COUNT, CONTEXT))
    metrics = aggregate_sql(verdicts, ["unfenced"] * len(verdicts))
    assert metrics["examples"] == 9 and metrics["no_sql_found"] == 0
    assert metrics["execution_accuracy"] == pytest.approx(1 / 9)
    assert metrics["error_denied"] == 3 and metrics["error_multiple_statements"] == 4
    assert metrics["error_sql_error"] == 1


def test_a_fenced_query_with_prose_around_it_stays_right():
    from llm_trainer.evaluation.sql import score_sql

    generation = (f"Never run DROP TABLE employees; on this.\n```sql\n{COUNT};\n```\n"
                  "This counts the rows; DELETE FROM employees would empty the table.")
    verdict = score_sql(generation, COUNT, CONTEXT)
    assert verdict["correct"] and verdict["predicted_sql"] == f"{COUNT};"
    # The fence holds two statements: the sandbox refuses them.
    assert score_sql(f"```sql\n{COUNT}; DELETE FROM employees\n```", COUNT, CONTEXT)["error"] == "multiple_statements"


def test_extraction_stays_fast_on_long_prose():
    from llm_trainer.evaluation.sql import extract_sql

    prose = "We select the rows with the update and create values. " * 60
    generation = f"{prose}\n{AVERAGE}\n" + "It is long, and it's prose. " * 300
    started = time.monotonic()
    assert extract_sql(generation) == AVERAGE
    assert time.monotonic() - started < 3


# --- MySQL and PostgreSQL date functions in gold queries -------------------------------------------------------

DATES = [
    ("mysql", "SELECT YEAR(hired), MONTH(hired), DAY(hired) FROM employees WHERE id = 2", [(2021, 5, 17)]),
    ("mysql", "SELECT HOUR(seen), MINUTE(seen), SECOND(seen), DAYOFYEAR(hired), QUARTER(hired), DAYOFWEEK(hired) "
              "FROM employees WHERE id = 2", [(13, 45, 30, 137, 2, 2)]),  # 2021-05-17 was a Monday (MySQL: 2)
    ("mysql", "SELECT EXTRACT(YEAR FROM hired) AS y, COUNT(*) FROM employees GROUP BY YEAR(hired) ORDER BY y",
     [(2020, 1), (2021, 2)]),
    ("mysql", "SELECT DATE_FORMAT(hired, '%Y-%m') FROM employees WHERE id = 3", [("2021-11",)]),
    ("mysql", "SELECT COUNT(*) FROM employees WHERE hired < NOW() AND hired < CURDATE() AND seen < SYSDATE()", [(3,)]),
    ("mysql", "SELECT DATE_ADD(hired, INTERVAL 1 MONTH), DATE_SUB(hired, INTERVAL 2 WEEK), ADDDATE(hired, 3), "
              "DATE_ADD(seen, INTERVAL 2 HOUR) FROM employees WHERE id = 2",
     [("2021-06-17", "2021-05-03", "2021-05-20", "2021-05-17 15:45:30")]),
    ("mysql", "SELECT COUNT(*) FROM employees WHERE hired >= DATE_SUB('2021-12-31', INTERVAL 1 YEAR)", [(2,)]),
    ("mysql", "SELECT UNIX_TIMESTAMP(hired) FROM employees WHERE id = 1", [(1577923200,)]),
    ("postgres", "SELECT EXTRACT(MONTH FROM hired), DATE_PART('year', hired), EXTRACT(DOW FROM hired) "
                 "FROM employees WHERE id = 2", [(5, 2021, 1)]),
    ("postgres", "SELECT hired + INTERVAL '3 months', DATE_TRUNC('month', hired), DATE_TRUNC('year', hired) "
                 "FROM employees WHERE id = 2", [("2021-08-17", "2021-05-01", "2021-01-01")]),
    ("postgres", "SELECT COUNT(*) FROM employees WHERE hired > NOW() - INTERVAL '100 years' "
                 "AND hired < CURRENT_DATE - 30", [(3,)]),
]


@pytest.mark.parametrize("dialect, sql, rows", DATES, ids=[f"{d}-{i}" for i, (d, _, _) in enumerate(DATES)])
def test_date_functions_transpile_to_sqlite_strftime(dialect, sql, rows):
    from llm_trainer.data.sql import transpile_to_sqlite
    from llm_trainer.sql_sandbox import Sandbox

    with Sandbox(CONTEXT) as sandbox:
        assert sandbox.run(sql).error == "sql_error"  # SQLite cannot run it as written
        transpiled = transpile_to_sqlite(sql, dialect)
        result = sandbox.run(transpiled)
    assert result.ok, (transpiled, result.detail)
    assert result.rows == rows, transpiled


def date_row(**fields):
    row = {"sql_prompt": "Hires per year?", "sql_context": CONTEXT, "sql_explanation": "", "domain": "hr",
           "sql": "SELECT YEAR(hired), COUNT(*) FROM employees GROUP BY YEAR(hired)", "sql_complexity": "aggregation"}
    return {"row_id": [1], **{k: [v] for k, v in {**row, **fields}.items()}}


def test_gold_queries_with_date_functions_are_kept_or_dropped_with_the_missing_function(make_config):
    from llm_trainer.data import build_processor
    from llm_trainer.evaluation.sql import score_sql

    mysql_config = make_config(data={"processor": "sql", "source": "unused.jsonl", "sql_dialect": "mysql"})
    mysql = build_processor(mysql_config.data)
    kept = mysql.format_batch(date_row())
    assert kept["drop_reason"] == [None] and kept["gold_transpiled"] == [True]
    gold = kept["reference_answer"][0]
    assert "STRFTIME('%Y', hired)" in gold
    assert score_sql("```sql\nSELECT strftime('%Y', hired) + 0, COUNT(*) FROM employees GROUP BY 1\n```", gold,
                     CONTEXT)["correct"]
    # A function with no SQLite rewrite: the drop reason names it.
    assert mysql.format_batch(date_row(sql="SELECT DAYNAME(hired) FROM employees"))["drop_reason"] == [
        "gold_no_such_function: DAYNAME"]
    # Without a dialect to transpile from, "no such function: YEAR" is kept in the reason.
    sqlite = build_processor(make_config(data={"processor": "sql", "source": "unused.jsonl"}).data)
    assert sqlite.format_batch(date_row())["drop_reason"] == ["gold_no_such_function: YEAR"]
    assert sqlite.format_batch(date_row(sql="SELECT salary FROM nowhere"))["drop_reason"] == ["gold_query_fails"]
