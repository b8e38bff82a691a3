"""Regenerate data/sql_sample/: text-to-SQL rows in the gretelai/synthetic_text_to_sql schema, made offline.

36 generated schemas (12 domains x 3 variants: a main table and a lookup table joined on its category, each with
its own rows) and question templates in seven complexities, so that the quickstart trains and is scored by
execution without the Hub. Every gold query is checked to execute in SQLite; those that return no row are left out.
Deterministic: the same seed writes the same file.

    .venv/bin/python scripts/make_sql_sample.py [--out data/sql_sample/sql_sample.jsonl] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# domain, entity (plural), table, name column, names, category column, categories, lookup table, lookup column,
# lookup values, numeric columns (name, low, high) of which each variant uses one
DOMAINS = [
    ("human resources", "employees", "employees", "name",
     ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"],
     "department", ["Sales", "IT", "Finance", "Legal"], "departments", "city", ["Oslo", "Lima", "Pune", "Kyiv"],
     [("salary", 30000, 120000), ("age", 21, 64), ("tenure_years", 1, 30)]),
    ("retail", "products", "products", "product_name",
     ["Lamp", "Chair", "Desk", "Mug", "Rug", "Sofa", "Shelf", "Clock", "Vase", "Stool"],
     "category", ["Home", "Office", "Kitchen", "Garden"], "categories", "manager", ["Kim", "Lou", "Max", "Noa"],
     [("price", 5, 900), ("stock", 0, 500), ("reviews", 0, 5000)]),
    ("education", "students", "students", "student_name",
     ["Aya", "Bo", "Cy", "Dee", "Ed", "Flo", "Gil", "Hal", "Ida", "Jo"],
     "major", ["Physics", "History", "Biology", "Art"], "majors", "faculty", ["Science", "Humanities", "Life", "Arts"],
     [("gpa_points", 150, 400), ("credits", 10, 160), ("age", 17, 40)]),
    ("healthcare", "patients", "patients", "patient_name",
     ["Abe", "Bea", "Cal", "Dot", "Eve", "Fin", "Gwen", "Hugo", "Iris", "Jack"],
     "ward", ["North", "South", "East", "West"], "wards", "head_nurse", ["Ruth", "Sam", "Tess", "Uma"],
     [("age", 1, 99), ("stay_days", 1, 60), ("bill", 100, 50000)]),
    ("logistics", "shipments", "shipments", "tracking_code",
     ["TX1", "TX2", "TX3", "TX4", "TX5", "TX6", "TX7", "TX8", "TX9", "TX10"],
     "carrier", ["Swift", "Atlas", "Nord", "Pax"], "carriers", "country", ["Chile", "Japan", "Kenya", "Spain"],
     [("weight_kg", 1, 2000), ("distance_km", 10, 9000), ("cost", 20, 8000)]),
    ("finance", "accounts", "accounts", "owner",
     ["Ada", "Bob", "Cid", "Deb", "Emil", "Fred", "Gail", "Hank", "Ines", "Jill"],
     "branch", ["Central", "Harbor", "Hill", "Park"], "branches", "region", ["Coast", "Inland", "Metro", "Valley"],
     [("balance", 0, 100000), ("transactions", 0, 900), ("credit_score", 300, 850)]),
    ("sports", "players", "players", "player_name",
     ["Ari", "Bas", "Cruz", "Dax", "Enzo", "Fitz", "Gio", "Hux", "Ike", "Jax"],
     "team", ["Lions", "Hawks", "Bears", "Sharks"], "teams", "coach", ["Ortiz", "Park", "Quinn", "Reyes"],
     [("goals", 0, 60), ("matches", 1, 90), ("height_cm", 160, 210)]),
    ("agriculture", "farms", "farms", "farm_name",
     ["Oak", "Elm", "Pine", "Ash", "Birch", "Cedar", "Maple", "Willow", "Yew", "Alder"],
     "crop", ["Wheat", "Rice", "Maize", "Soy"], "crops", "season", ["Spring", "Summer", "Autumn", "Winter"],
     [("hectares", 5, 900), ("yield_tons", 1, 4000), ("workers", 1, 80)]),
    ("energy", "plants", "power_plants", "plant_name",
     ["Alpha", "Beta", "Gamma", "Delta", "Omega", "Sigma", "Kappa", "Theta", "Zeta", "Iota"],
     "source", ["Solar", "Wind", "Hydro", "Gas"], "sources", "renewable", ["yes", "no", "partly", "unknown"],
     [("capacity_mw", 10, 3000), ("output_gwh", 5, 9000), ("built_year", 1960, 2024)]),
    ("media", "films", "films", "title",
     ["Dawn", "Echo", "Fable", "Glow", "Haze", "Isle", "Jolt", "Kite", "Lumen", "Mirth"],
     "genre", ["Drama", "Comedy", "Horror", "Action"], "genres", "audience", ["Adults", "Teens", "All", "Kids"],
     [("runtime_min", 70, 200), ("budget_musd", 1, 300), ("release_year", 1970, 2024)]),
    ("travel", "hotels", "hotels", "hotel_name",
     ["Aster", "Bay", "Crest", "Dune", "Ember", "Fern", "Grove", "Harbor", "Inlet", "Jade"],
     "city", ["Rome", "Cairo", "Quito", "Seoul"], "cities", "country", ["Italy", "Egypt", "Ecuador", "Korea"],
     [("rooms", 10, 600), ("nightly_rate", 40, 900), ("staff", 5, 300)]),
    ("manufacturing", "machines", "machines", "machine_id",
     ["M01", "M02", "M03", "M04", "M05", "M06", "M07", "M08", "M09", "M10"],
     "line", ["A", "B", "C", "D"], "lines", "supervisor", ["Vera", "Wade", "Xia", "Yuri"],
     [("units_per_hour", 10, 900), ("downtime_hours", 0, 200), ("age_years", 1, 40)]),
]


def build_schema(domain: tuple, variant: int, rng: random.Random) -> dict:
    name, entity, table, name_col, names, cat_col, cats, lookup, lookup_col, lookup_values, numerics = domain
    num_col, low, high = numerics[variant]
    table = f"{table}_{variant + 1}" if variant else table
    count = rng.randint(7, 10)
    picked = rng.sample(names, count)
    values = rng.sample(range(low, high + 1), count)  # distinct: ORDER BY ... LIMIT has no ties
    rows = [(i + 1, person, rng.choice(cats), value) for i, (person, value) in enumerate(zip(picked, values))]
    used = sorted({row[2] for row in rows})
    lookup_rows = list(zip(cats, rng.sample(lookup_values, len(lookup_values))))
    create = (f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {name_col} VARCHAR(50), {cat_col} VARCHAR(30), "
              f"{num_col} INTEGER); CREATE TABLE {lookup} ({cat_col} VARCHAR(30) PRIMARY KEY, "
              f"{lookup_col} VARCHAR(30));")
    inserts = (f" INSERT INTO {table} VALUES " + ", ".join(f"({i}, '{n}', '{c}', {v})" for i, n, c, v in rows)
               + f"; INSERT INTO {lookup} VALUES " + ", ".join(f"('{c}', '{v}')" for c, v in lookup_rows) + ";")
    return {"domain": name, "entity": entity, "table": table, "name_col": name_col, "cat_col": cat_col,
            "num_col": num_col, "lookup": lookup, "lookup_col": lookup_col, "rows": rows, "cats": used,
            "lookup_rows": lookup_rows, "context": create + inserts}


def questions(s: dict) -> list[tuple[str, str, str, str]]:
    """(complexity, question, sql, explanation) for one schema."""
    t, e, n, c, v, lk, lc = (s["table"], s["entity"], s["name_col"], s["cat_col"], s["num_col"], s["lookup"],
                             s["lookup_col"])
    nice_v, nice_c = v.replace("_", " "), c.replace("_", " ")
    values = sorted(row[3] for row in s["rows"])
    out = []
    for threshold in values[1:-1]:
        out.append(("basic SQL", f"List the {n.replace('_', ' ')} of {e} with a {nice_v} above {threshold}.",
                    f"SELECT {n} FROM {t} WHERE {v} > {threshold};",
                    f"Selects {n} from {t} where {v} is greater than {threshold}."))
        out.append(("basic SQL", f"How many {e} have a {nice_v} of at most {threshold}?",
                    f"SELECT COUNT(*) FROM {t} WHERE {v} <= {threshold};",
                    f"Counts the rows of {t} whose {v} is at most {threshold}."))
    for low, high in zip(values[1:], values[3:]):
        out.append(("basic SQL", f"List the {n.replace('_', ' ')} of {e} with a {nice_v} between {low} and {high}.",
                    f"SELECT {n} FROM {t} WHERE {v} BETWEEN {low} AND {high};",
                    f"Keeps the rows of {t} whose {v} lies in [{low}, {high}]."))
    for first, second in zip(s["cats"], s["cats"][1:] + s["cats"][:1]):
        if first < second:
            out.append(("set operations", f"List the {n.replace('_', ' ')} of {e} in the {first} or the {second} "
                        f"{nice_c}.", f"SELECT {n} FROM {t} WHERE {c} = '{first}' UNION SELECT {n} FROM {t} WHERE "
                        f"{c} = '{second}';", f"The UNION of the {e} in {first} and in {second}."))
    for cat in s["cats"]:
        out.append(("aggregation", f"How many {e} are in the {cat} {nice_c}?",
                    f"SELECT COUNT(*) FROM {t} WHERE {c} = '{cat}';", f"Counts the rows of {t} with {c} = '{cat}'."))
        out.append(("basic SQL", f"Show the {n.replace('_', ' ')} of all {e} in the {cat} {nice_c}.",
                    f"SELECT {n} FROM {t} WHERE {c} = '{cat}';", f"Filters {t} on {c} = '{cat}'."))
        for func, word in (("AVG", "average"), ("SUM", "total"), ("MAX", "highest"), ("MIN", "lowest")):
            out.append(("aggregation", f"What is the {word} {nice_v} of {e} in the {cat} {nice_c}?",
                        f"SELECT {func}({v}) FROM {t} WHERE {c} = '{cat}';",
                        f"Applies {func} to {v} over the rows of {t} with {c} = '{cat}'."))
        out.append(("subqueries", f"Which {e} in the {cat} {nice_c} have a {nice_v} above the overall average?",
                    f"SELECT {n} FROM {t} WHERE {c} = '{cat}' AND {v} > (SELECT AVG({v}) FROM {t});",
                    f"Compares each {v} in {cat} with the average {v} computed by a subquery."))
    for func, word in (("COUNT(*)", "number of"), ("AVG(" + v + ")", f"average {nice_v} of"),
                       ("MAX(" + v + ")", f"highest {nice_v} of")):
        out.append(("aggregation", f"What is the {word} {e} per {nice_c}?",
                    f"SELECT {c}, {func} FROM {t} GROUP BY {c};", f"Groups {t} by {c} and applies {func}."))
    for k in (1, 2, 3):
        out.append(("basic SQL", f"What are the top {k} {e} by {nice_v}?",
                    f"SELECT {n} FROM {t} ORDER BY {v} DESC LIMIT {k};",
                    f"Orders {t} by {v} descending and keeps {k} rows."))
    for cat, value in s["lookup_rows"]:
        if cat in s["cats"]:
            out.append(("single join", f"List the {e} whose {nice_c} has {lc.replace('_', ' ')} {value}.",
                        f"SELECT {t}.{n} FROM {t} JOIN {lk} ON {t}.{c} = {lk}.{c} WHERE {lk}.{lc} = '{value}';",
                        f"Joins {t} with {lk} on {c} and filters on {lc}."))
    out.append(("single join", f"Show each of the {e} with the {lc.replace('_', ' ')} of its {nice_c}.",
                f"SELECT {t}.{n}, {lk}.{lc} FROM {t} JOIN {lk} ON {t}.{c} = {lk}.{c};",
                f"Joins {t} with {lk} on {c}."))
    out.append(("window functions", f"Rank the {e} by {nice_v} within each {nice_c}.",
                f"SELECT {n}, {c}, RANK() OVER (PARTITION BY {c} ORDER BY {v} DESC) AS rank FROM {t};",
                f"RANK() over a partition by {c}, ordered by {v}."))
    out.append(("window functions", f"Show each of the {e} with the running total of {nice_v} in id order.",
                f"SELECT {n}, SUM({v}) OVER (ORDER BY id) AS running_total FROM {t};",
                f"A running SUM of {v} ordered by id."))
    out.append(("CTEs", f"Using a CTE, list the {nice_c} values whose average {nice_v} is above the overall average.",
                f"WITH per_group AS (SELECT {c}, AVG({v}) AS mean FROM {t} GROUP BY {c}) SELECT {c} FROM per_group "
                f"WHERE mean > (SELECT AVG({v}) FROM {t});",
                f"A CTE averages {v} per {c}; the outer query keeps those above the overall average."))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sql_sample" / "sql_sample.jsonl")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    records = []
    for domain in DOMAINS:
        for variant in range(3):
            schema = build_schema(domain, variant, rng)
            db = sqlite3.connect(":memory:")
            db.executescript(schema["context"])
            for complexity, question, sql, explanation in questions(schema):
                if not db.execute(sql).fetchall():  # every gold query executes; empty results say little
                    continue
                records.append({"id": len(records) + 1, "domain": schema["domain"], "sql_complexity": complexity,
                                "sql_task_type": "analytics and reporting", "sql_prompt": question,
                                "sql_context": schema["context"], "sql": sql, "sql_explanation": explanation})
            db.close()
    rng.shuffle(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    kinds = sorted({r["sql_complexity"] for r in records})
    print(f"wrote {len(records)} rows over {len(DOMAINS) * 3} schemas ({', '.join(kinds)}) to {args.out}")


if __name__ == "__main__":
    main()
