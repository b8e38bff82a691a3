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

# Reading the answer out of a sentence that states it ("The limit exists and is equal to 3"): a reference, or an
# explicit answer line written as a sentence. Stricter than a conclusion's reading, since a reference's other
# numbers must never become answers: one stating verb, its object cut before any clause or condition, an
# equation's right side only under a single symbol ("L = 3", not "f(x) = 0"), restatements in parentheses.
STATING_VERB = re.compile(
    r"\b(?:is|are|was|were|equals|will be|becomes|comes to|converges to|tends to|approaches|"
    r"(?:increase|decrease|grow|rise)(?:s|d|ed)? by|grew by|rose by|fell by)\s+"
    r"(?:(?:exactly|approximately|about|roughly|around|only|precisely|simply|just|equal to|given by)\s+)*",
    re.IGNORECASE)
ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\b|:)\s*:?\s*", re.IGNORECASE)
HEDGE = re.compile(r"^(?:exactly|approximately|about|roughly|around|only|precisely)\s+|^(?:≈|~|\\approx)\s*",
                   re.IGNORECASE)
REFERENCE_CUT = re.compile(r"\.\s|\.$|;|:\s|,\s+(?!and\b)[A-Za-z]{3,}|\s+(?:because|since|which|so that|where|as|"
                           r"namely|attained|achieved|reached)\b", re.IGNORECASE)
CONDITION = re.compile(r"\s+(?:when|whenever|if|for|unless|provided|with|at)\s", re.IGNORECASE)
# "The lines meet at (1, 3)", "f is decreasing on (-\infty, 0]": a point or an interval after words alone
TRAILING_OBJECT = re.compile(r"(?:^|\s)(?:at|on|in|over|to)\s+([(\[][^()\[\]]*[)\]])$", re.IGNORECASE)
PIECEWISE = re.compile(r"\b(?:otherwise|else|respectively)\b", re.IGNORECASE)
SYMBOL = re.compile(r"\\?[A-Za-z]{1,12}(?:_\{?[A-Za-z0-9]{1,8}\}?)?'*")  # L, x_1, KE, pH, \omega, v_{max}
NUMERIC_SIDE = re.compile(r"[\d\s.+\-*/^!()×·]+")  # "7!/5! = 42": the left side is the question, not the answer
NOT_EQUATION = re.compile(r"[<>]=|\\[lg]eq?|\\neq|≤|≥|≠")
TRAILING_PARENTHESIS = re.compile(r"\s+\(([^()]*)\)$")
RESTATES = re.compile(r"^(?:i\.e\.,?|that is,?|or|approximately|about|roughly|equivalently|≈|~|\\approx|=)\s*",
                      re.IGNORECASE)
UNIT_WORD = re.compile(r"[A-Za-z]+(?:\^\d|²|³)?(?:/[A-Za-z]+(?:\^\d|²|³)?)?\.?")
SCIENTIFIC = re.compile(r"(\d)\s*(?:x|×|\*)\s*10\s*\^\s*\{?(-?\d+)\}?")
PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
SET_NAMES = (("\\emptyset", "\\varnothing", "∅", "\\{\\}", "empty set", "the empty set"),
             ("\\mathbb{R}", "ℝ", "(-\\infty, \\infty)", "all real numbers", "the set of all real numbers",
              "the real numbers", "all reals"))


@dataclass
class Extraction:
    """The answer read out of a model's reply, with how it was found and whether it hedges."""

    method: str  # final_line, boxed, answer_is, conclusion, display_math, last_number, last_line, none
    candidates: list[str] = field(default_factory=list)
    sentence: str = ""  # the sentence the answer came from (for phrase and yes/no matching)
    conflicting: bool = False  # several final-answer lines state different answers: a hedge, never correct
    hedged: bool = False  # the final line offers different numbers ("3 or 4"): correct only if the reference does

    @property
    def answer(self) -> str:
        """The first candidate reading of the answer, or '' when none was found."""
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
    """An extracted answer without surrounding markdown, math delimiters and trailing punctuation."""
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
    """The text's sentences, never cut inside inline or display math."""
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


def is_sentence(text: str) -> bool:
    """Prose rather than an answer: a stating verb, or three or more words outside math ("1/4 of a day" is an
    answer, "100 F is about 37.78 degrees" is not). A sentence is never read as the number it starts with."""
    bare = MATH.sub(" ", text)
    return bool(STATING_VERB.search(bare)) or len(PROSE_WORD.findall(bare)) >= 3


def sentence_answers(text: str) -> list[str]:
    """The answers a sentence states, narrowest readings included: "The limit exists and is equal to 3" -> 3,
    "The answer is Mercury." -> Mercury, "The line is y = 3x - 1." -> y = 3x - 1 and 3x - 1, "There are 120
    ways." -> 120, "$\\frac{3}{8}$ (0.375)" -> both. Nothing for yes/no sentences (the yes/no judge reads
    those), for two stating verbs ("the maximum is 2 and the minimum is -2") or a piecewise answer."""
    text = clean(re.sub(r"\$([^$]+)\$", r"\1", text))
    text = clean(ANSWER_PREFIX.sub("", text, count=1))
    inner = boxed(text)
    if inner is not None:
        return _phrase_answers(inner)
    if re.match(r"(?:yes|no)\b", text, re.IGNORECASE):
        return []
    there = THERE_ARE.match(text)
    if there:
        return _phrase_answers(there.group(1))
    aside = TRAILING_PARENTHESIS.search(text)  # "The rank is 1 (the rows are proportional)": its verb is not ours
    if aside and aside.group(1)[:1].isalpha() and not RESTATES.match(aside.group(1)):
        text = text[:aside.start()]
    verbs = list(STATING_VERB.finditer(text))
    if len(verbs) > 1:
        return []
    return _phrase_answers(text[verbs[0].end():] if verbs else text)


def _phrase_answers(phrase: str) -> list[str]:
    phrase = clean(HEDGE.sub("", clean(phrase)))
    parenthesis = TRAILING_PARENTHESIS.search(phrase)
    if parenthesis:
        head, inside = phrase[:parenthesis.start()], parenthesis.group(1).strip()
        if RESTATES.match(inside) or (re.search(r"\d", head) and not inside[:1].isalpha()):
            return [*_phrase_answers(head), *_phrase_answers(RESTATES.sub("", inside))]
        if inside[:1].isalpha():  # an aside: "6 (one for each face)"
            return _phrase_answers(head)
    cut = REFERENCE_CUT.search(phrase)
    phrase = clean(phrase[:cut.start()] if cut else phrase)
    point = TRAILING_OBJECT.search(phrase)
    if point and not re.search(r"\d", phrase[:point.start()]):
        return [phrase, point.group(1)]
    conditions = list(CONDITION.finditer(phrase))
    if PIECEWISE.search(phrase) or len(conditions) > 1:
        return []
    if conditions:
        phrase = clean(phrase[:conditions[0].start()])
    return list(dict.fromkeys(f for f in _forms(phrase) if f))


def _forms(phrase: str) -> list[str]:
    """The phrase, the right side of "SYMBOL = value", the value without its unit words, a list of values
    ("1 and 3", "x = 1 and x = 2" -> "1, 3", "1, 2"), other names of the empty set and of the reals, "pi" as
    \\pi and "6 x 10^8" as 6 \\times 10^{8}."""
    found = [phrase]
    for names in SET_NAMES:
        if phrase.lower() in (name.lower() for name in names):
            found.extend(names)
    sides = phrase.split("=")
    if len(sides) == 2 and not NOT_EQUATION.search(phrase):
        left, right = sides[0].strip(), clean(sides[1])
        if SYMBOL.fullmatch(left) or NUMERIC_SIDE.fullmatch(left):
            found.append(right)
    values = list_values(re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", phrase))
    if values:
        found.append(values)
    found.extend(SCIENTIFIC.sub(r"\1 \\times 10^{\2}", f) for f in list(found))  # "6 x 10^8" is 6 \times 10^{8}
    found.extend(re.sub(r"(?<![\\A-Za-z])pi(?![A-Za-z])", r"\\pi", f) for f in list(found))
    for text in list(found):  # "5 units long" -> 5, "\pi/4 radians" -> \pi/4
        tokens = text.split()
        while len(tokens) > 1 and len(text.split()) - len(tokens) < 3 and UNIT_WORD.fullmatch(tokens[-1]):
            tokens.pop()
        value = " ".join(tokens)
        if value != text and re.search(r"[\d\\]", value) and not PROSE_WORD.search(value):
            found.append(value)
    return found


def list_values(items: list[str]) -> str | None:
    """"1, 3" for the items ["1", "3"] or ["x = 1", "x = 3"] (one symbol throughout), else None."""
    if len(items) < 2:
        return None
    pairs = [re.fullmatch(r"(?:(" + SYMBOL.pattern + r")\s*=\s*)?(\S+)", item.strip()) for item in items]
    if not all(pairs) or len({p.group(1) for p in pairs}) != 1:
        return None
    values = [p.group(2) for p in pairs]
    return ", ".join(values) if all(re.search(r"[\d\\]", v) for v in values) else None


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
    """The final answer of a reply: its final-answer line, else a boxed answer, 'the answer is', a conclusion..."""
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
