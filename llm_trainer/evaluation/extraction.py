"""Reading the answer out of a model's solution, the way a careful grader reads it.

Where the answer is stated, in order of trust:
1. an explicit final-answer line ("Final answer: X", "**Final Answer:** X") or the line under an answer heading
   ("# Answer", "**Final Answer**" alone on its line, as PRM800K's solutions end), the last one (lines stating
   different final answers are a hedge: ``conflicting``, scored wrong);
2. the last ``\\boxed{...}``;
3. "the answer is X" / "Answer: X", the last one;
4. the concluding sentence ("Therefore/So/Thus/Hence ..."): "there are N ...", "... is X", "... = X",
   a yes/no conclusion ("it is not possible", "does not exist", "there are no ...");
5. the last display-math block (``\\[...\\]``, ``$$...$$``);
6. the last number, then the last line.

``extract(text)`` returns the place it used (``method``) and the candidate answers it states there: the phrase
as written plus narrower readings of it (the math inside ``$...$``, the right side of ``x = 3``, each of
"A, or equivalently B"). They are all the same claim, so matching any of them is fair to the writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llm_trainer.evaluation.text_metrics import parse_number

FINAL_LINE = re.compile(r"final\s+answer\s*(?:is|:)?\**\s*:?\**\s*(.+)", re.IGNORECASE)
STATED_FINAL_LINE = re.compile(r"^\W*final\s+answer\s*(?:is\b|:)", re.IGNORECASE)  # a line that states one
ANSWER_HEADING = re.compile(r"^\s*(?:#{1,6}\s*)?\**\s*(?:final\s+)?answer\s*\**\s*:?\s*\**\s*$", re.IGNORECASE)
ANSWER_IS = re.compile(r"(?:\bthe\s+(?:final\s+|correct\s+)?answer\s+is|\banswer\s*:)\**\s*:?\s*(.+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?:\s*/\s*\d+)?", re.IGNORECASE)
CONCLUSION = re.compile(
    r"^\W*(?:therefore|thus|hence|so\b|consequently|in conclusion|in summary|to conclude|finally|as a result|"
    r"this (?:gives|means|shows)|we (?:conclude|get|find|obtain|have)|the (?:result|solution) is|"
    r"putting (?:it|this) (?:all )?together|overall)", re.IGNORECASE)
THERE_ARE = re.compile(r"\bthere\s+(?:are|is|were|will be)\s+(?:exactly\s+|a total of\s+|only\s+)?(\$?-?[\d,.]+\$?)",
                       re.IGNORECASE)
COPULA = re.compile(r"\b(?:is|are|equals|was|will be|becomes|comes to|gives)\s+"
                    r"(?:(?:exactly|approximately|about|simply|just|given by|equal to|called|named|known as|"
                    r"the expression|the formula|"
                    r"the value|the set|the interval)\s+)*", re.IGNORECASE)
CUT = re.compile(r",\s+(?:which|so|and|because|since|where|as|that|i\.e|meaning)\b|;|\s+(?:because|since|for all|"
                 r"when|where|which|so that)\b|\s+\((?!i\.e|or\b)(?=[A-Za-z]{2,})|\.\s|\.$", re.IGNORECASE)
ALTERNATIVES = re.compile(r",?\s+or\s+(?:equivalently\s+)?|\s*\(i\.e\.,?\s*|\s*\(or\s+|,\s+i\.e\.,?\s+", re.IGNORECASE)
MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$(.+?)\$", re.DOTALL)
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]", re.DOTALL)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*#\\$(])|\n\s*\n|\n(?=\s*(?:[-*#|]|\d+\.)\s)")
VERB_NUMBER = re.compile(r"\b(?:has|have|had|takes|took|costs?|contains?|needs?|requires?|makes?|weighs?|yields?|"
                         r"holds?|leaves?|gets?|totals?)\s+(?:(?:about|exactly|just|only|approximately|a total of)\s+)*"
                         r"(\$?-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
ASIDE = re.compile(r"\s\((?!i\.e|or\b)[A-Za-z][^()]*\)")
BOLD = re.compile(r"\*\*(.+?)\*\*")
STRONG_YES_NO = re.compile(r"^\W*(?:(?:therefore|thus|hence|so|in conclusion|no|yes)\W+)*(yes|no)\b", re.IGNORECASE)
PLEASANTRY = re.compile(r"\b(?:let me know|hope this helps|feel free|happy to help|if you (?:have|need|want)|"
                        r"check(?:ing)?:|verify|verification|sanity)", re.IGNORECASE)
NEGATIVE = re.compile(r"\b(?:the answer is no|no\b,|not possible|impossible|cannot|can ?not|can't|does not exist|"
                      r"doesn't exist|do not exist|there (?:are|is|exist) no|no such|not true|is false|never|"
                      r"no (?:real |integer |positive |rational )?solutions?|is not|are not|isn't|aren't|neither)",
                      re.IGNORECASE)
POSITIVE = re.compile(r"\b(?:the answer is yes|yes\b|is possible|it is true|is true|exists?\b|always|there (?:is|are)"
                      r" (?:a|an|such)|can be|is indeed|does hold|holds)", re.IGNORECASE)


@dataclass
class Extraction:
    method: str  # final_line, boxed, answer_is, conclusion, display_math, last_number, last_line, none
    candidates: list[str] = field(default_factory=list)
    sentence: str = ""  # the sentence the answer came from (for phrase and yes/no matching)
    conflicting: bool = False  # several final-answer lines state different answers: a hedge, never correct
    hedged: bool = False  # the final line offers different numbers ("3 or 4"): correct only if the reference does

    @property
    def answer(self) -> str:
        return self.candidates[0] if self.candidates else ""


def boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), nested braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    begin = text.index("{", start) + 1
    depth = 1
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[begin:index].strip()
    return text[begin:].strip()


def clean(answer: str) -> str:
    answer = answer.strip().strip("*_").strip()
    answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
    answer = answer.rstrip(".,;:!").strip().strip("*_").strip()
    if answer.count("$") == 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer.rstrip(".,;").strip()


def readings(phrase: str) -> list[str]:
    """The candidate answers a phrase states: as written, the math in it, the right side of an equation,
    and each alternative of "A, or equivalently B"."""
    phrase = clean(phrase)
    if not phrase:
        return []
    found: list[str] = [phrase]
    inner = boxed(phrase)
    if inner is not None:
        found.append(inner)
    math = [next(g for g in m.groups() if g is not None).strip() for m in MATH.finditer(phrase)]
    found.extend(math)
    for part in ALTERNATIVES.split(phrase):
        part = clean(part.rstrip(")"))
        if part and part != phrase:
            found.append(part)
    for text in list(found):
        stripped = re.sub(r"\$(?=\d)", "", text)  # "$45" is money, not a math delimiter
        if stripped != text:
            found.append(clean(stripped))
        if "=" in text and not re.search(r"[<>]=|\\[lg]eq?|\\neq", text):
            found.append(clean(text.rsplit("=", 1)[1]))
        elif re.search(r"\\approx|≈", text):  # "t \approx 2.02 s" states the value 2.02 s
            found.append(clean(re.split(r"\\approx|≈", text)[-1]))
        number = re.match(r"^\$?(-?[\d,]*\.?\d+(?:\s*/\s*\d+)?)\s*(%|\\%)?", text)
        if number and number.group(0).strip() != text:
            found.append(number.group(0).lstrip("$").strip())
    return list(dict.fromkeys(f for f in found if f))


def _cut(phrase: str) -> str:
    match = CUT.search(phrase)
    return phrase[:match.start()] if match else phrase


def _protect_math(text: str) -> str:
    """Sentence splitting must not cut inside math: dots and newlines in $...$ / \\[...\\] become spaces."""
    return MATH.sub(lambda m: m.group(0).replace("\n", " ").replace(". ", "  "), text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(_protect_math(text)) if s and s.strip()]


def conclusion_sentence(text: str) -> str | None:
    """The last sentence that states a conclusion ("Therefore ...", or a final "X is Y."), skipping closing
    remarks, checks and parenthetical asides after it."""
    candidates = sentences(text)[-12:]
    for position, sentence in enumerate(reversed(candidates)):
        body = re.sub(r"^[#>*\-\s]+", "", sentence)
        if PLEASANTRY.search(body) or body.startswith("("):
            continue
        final_statement = COPULA.search(body) or BOLD.search(body) or "=" in body
        if CONCLUSION.search(body) or (position == 0 and final_statement and len(body.split()) <= 40):
            return body
    return None


def _from_conclusion(sentence: str) -> list[str]:
    sentence = ASIDE.sub("", sentence)
    bold = [b for b in BOLD.findall(sentence) if b.strip()]
    if bold:
        return readings(bold[-1])
    there = THERE_ARE.search(sentence)
    if there:
        return readings(there.group(1))
    display = [next(g for g in m.groups() if g) for m in DISPLAY_MATH.finditer(sentence)]
    copulas = list(COPULA.finditer(sentence))
    if copulas:
        phrase = _cut(sentence[copulas[-1].end():])
        if display and not phrase.strip(" :$\\[]"):
            return readings(display[-1])
        return readings(phrase)
    if display:
        return readings(display[-1])
    math = [next(g for g in m.groups() if g) for m in MATH.finditer(sentence)]
    if math:
        return readings(math[-1])
    if "=" in sentence and not re.search(r"[<>]=|\\[lg]eq?", sentence):
        return readings(_cut(sentence.rsplit("=", 1)[1] + " "))
    verb = VERB_NUMBER.search(sentence)  # "it takes 5 minutes for 100 machines", "has 1024 subsets"
    if verb:
        return readings(verb.group(1))
    numbers = NUMBER.findall(sentence)
    return readings(numbers[-1]) if numbers else []


def polarity(sentence: str, strong_only: bool = False) -> str | None:
    """"no" or "yes" when the sentence states a yes/no conclusion, else None. ``strong_only``: only when it
    opens with the word ("Therefore, no, ...")."""
    strong = STRONG_YES_NO.search(sentence)
    if strong or strong_only:
        return strong.group(1).lower() if strong else None
    if NEGATIVE.search(sentence):
        return "no"
    if POSITIVE.search(sentence):
        return "yes"
    return None


def _line_below(lines: list[str], index: int) -> str:
    """The first non-empty line under an answer heading."""
    return next((line.strip() for line in lines[index + 1:] if line.strip()), "")


def extract(text: str) -> Extraction:
    if not text or not text.strip():
        return Extraction("none")
    lines = text.splitlines()
    finals = [(index, m.group(1)) for index, line in enumerate(lines)
              if not ANSWER_HEADING.match(line) and (m := FINAL_LINE.search(line))]
    finals += [(index, below) for index, line in enumerate(lines)
               if ANSWER_HEADING.match(line) and (below := _line_below(lines, index))]
    if finals:
        stated = {_final_reading(m.group(1)).casefold().replace(" ", "") for line in lines
                  if STATED_FINAL_LINE.match(line) and not ANSWER_HEADING.match(line)
                  and (m := FINAL_LINE.search(line))}
        final = max(finals)[1]
        last = _final_reading(final)
        return Extraction("final_line", readings(last), final, conflicting=len(stated) > 1,
                          hedged=states_different_numbers(last))
    inner = boxed(text)
    if inner is not None:
        return Extraction("boxed", readings(inner))
    stated = [m.group(1) for line in lines if (m := ANSWER_IS.search(line))]
    if stated:
        return Extraction("answer_is", readings(_cut(stated[-1])), stated[-1])
    sentence = conclusion_sentence(text)
    if sentence:
        candidates = _from_conclusion(sentence)
        if candidates or polarity(sentence):
            return Extraction("conclusion", candidates, sentence)
    display = [next(g for g in m.groups() if g) for m in DISPLAY_MATH.finditer(text)]
    if display:
        return Extraction("display_math", readings(display[-1]))
    numbers = NUMBER.findall(text)
    if numbers:
        return Extraction("last_number", [numbers[-1].strip()])
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return Extraction("last_line", readings(last), last)


def states_different_numbers(answer: str) -> bool:
    """"3 or 4": "or"-alternatives that are plain numbers of different values state two answers, not one ("504, or
    equivalently 2*C(10,5)" and "0.5 (or 1/2)" restate one)."""
    parts = re.split(r",?\s+or\s+(?!equivalently)", answer, flags=re.IGNORECASE)
    return len({n for n in map(parse_number, parts) if n is not None}) > 1


def _final_reading(line: str) -> str:
    inner = boxed(line)
    return inner if inner is not None else _cut(line + " ").strip().rstrip(".")


def extract_answer(text: str) -> str:
    """The single answer string a solution states (the first candidate of ``extract``)."""
    return extract(text).answer
