"""Regenerate data/chat_sample/: small offline chat data in the three shapes the chat processor reads.

- messages.jsonl: OpenAI-style multi-turn conversations (1 to 3 exchanges, some with a system turn), plus a few
  malformed ones of each kind the processor drops (unknown role, empty content, no assistant turn, two user turns
  in a row), so that the quickstart's report shows the counts;
- alpaca.jsonl: instruction / input / output rows;
- sharegpt.jsonl: conversations of from / value turns.

Topics are templated facts (capitals, arithmetic, unit conversions, word lengths) with fixed answer phrasings, so
the tiny model can learn them. Deterministic: the same seed writes the same files.

    .venv/bin/python scripts/make_chat_sample.py [--out data/chat_sample] [--seed 11] [--rows 360]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNTRIES = [("France", "Paris", "French"), ("Japan", "Tokyo", "Japanese"), ("Kenya", "Nairobi", "Swahili"),
             ("Peru", "Lima", "Spanish"), ("Norway", "Oslo", "Norwegian"), ("Egypt", "Cairo", "Arabic"),
             ("Canada", "Ottawa", "English"), ("Italy", "Rome", "Italian"), ("India", "New Delhi", "Hindi"),
             ("Chile", "Santiago", "Spanish"), ("Poland", "Warsaw", "Polish"), ("Greece", "Athens", "Greek")]
WORDS = ["river", "lantern", "orbit", "meadow", "quartz", "harbor", "violet", "thunder", "pebble", "canyon"]
SYSTEMS = ["You are a concise assistant.", "Answer briefly and politely."]
MALFORMED = {
    "unknown_role": lambda: [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Beep."}],
    "empty_content": lambda: [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "  "}],
    "no_assistant_turn": lambda: [{"role": "user", "content": "Anyone there?"}],
    "consecutive_user_turns": lambda: [{"role": "user", "content": "Hello."}, {"role": "user", "content": "Hello?"},
                                       {"role": "assistant", "content": "Hello! How can I help?"}],
}


def exchange(rng: random.Random) -> list[tuple[str, str]]:
    """One topic as 1 to 3 (user, assistant) exchanges that follow on from each other."""
    kind = rng.choice(["country", "arithmetic", "units", "word"])
    if kind == "country":
        country, capital, language = rng.choice(COUNTRIES)
        turns = [(f"What is the capital of {country}?", f"The capital of {country} is {capital}."),
                 ("Which language is spoken there?", f"The main language of {country} is {language}."),
                 ("Thanks!", "You are welcome.")]
    elif kind == "arithmetic":
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        turns = [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}."),
                 ("And if you multiply them?", f"{a} x {b} = {a * b}."),
                 (f"Is {a + b} even?", f"{'Yes' if (a + b) % 2 == 0 else 'No'}, {a + b} is "
                                       f"{'even' if (a + b) % 2 == 0 else 'odd'}.")]
    elif kind == "units":
        km = rng.randint(1, 90)
        turns = [(f"How many meters are in {km} km?", f"{km} km is {km * 1000} meters."),
                 ("And in centimeters?", f"{km} km is {km * 100000} centimeters."),
                 ("Thanks!", "You are welcome.")]
    else:
        word = rng.choice(WORDS)
        turns = [(f"How many letters does the word '{word}' have?", f"The word '{word}' has {len(word)} letters."),
                 ("Spell it backwards.", f"Backwards it is '{word[::-1]}'."),
                 ("What is its first letter?", f"Its first letter is '{word[0]}'.")]
    return turns[: rng.choice([1, 2, 2, 3])]


def messages_rows(rng: random.Random, rows: int) -> list[dict]:
    out = []
    for _ in range(rows):
        conversation = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.3 else []
        for user, assistant in exchange(rng):
            conversation += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        out.append({"messages": conversation})
    for make in MALFORMED.values():  # three of each kind
        out += [{"messages": make()} for _ in range(3)]
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "chat_sample")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rows", type=int, default=360)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    files = {"messages.jsonl": messages_rows(rng, args.rows)}
    files["alpaca.jsonl"] = []
    for _ in range(args.rows // 3):  # half with the question as the input of a generic instruction
        user, assistant = exchange(rng)[0]
        files["alpaca.jsonl"].append({"instruction": "Answer the question.", "input": user, "output": assistant}
                                     if rng.random() < 0.5 else {"instruction": user, "input": "", "output": assistant})
    files["sharegpt.jsonl"] = [
        {"conversations": [{"from": side, "value": text} for pair in exchange(rng) for side, text in
                           zip(("human", "gpt"), pair)]} for _ in range(args.rows // 3)]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with (args.out / name).open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        print(f"wrote {len(rows)} rows to {args.out / name}")


if __name__ == "__main__":
    main()
