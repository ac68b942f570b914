"""The shop's optional survey: questions in a TOML file, answers as the enrolment's "survey".

Each question and choice carries its own fr/lt/en texts, so a shop writes and translates its
questions without touching the kiosk's translations. The answers go to the service as one flat
object a report can query (see ``answers_for_service``):

- ``"_survey"``: the survey's ``id`` (which questionnaire the answers belong to);
- a single-choice question: ``"<question>": "<choice>"``;
- a multiple-choice question: ``"<question>": "<choice>,<choice>"`` (choice ids, in the file's
  order, joined by commas);
- a text question: ``"<question>": "<what was typed>"`` (at most ``max_length`` characters).

Unanswered questions are left out. The service takes at most 30 keys of 64 characters and
values of 200 characters, which ``load`` checks the file can never exceed.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parent / "default_survey.toml"
LANGUAGES = ("fr", "lt", "en")
KINDS = ("single", "multiple", "text")
IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_KEYS = 30     # the service's limit on the survey object
MAX_VALUE = 200   # the service's limit on one answer


class SurveyError(ValueError):
    """The survey file is not usable; the message says where and why."""


@dataclass(frozen=True)
class Choice:
    id: str
    text: dict[str, str]


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    text: dict[str, str]
    choices: tuple[Choice, ...] = ()
    max_length: int = 0


@dataclass(frozen=True)
class Survey:
    id: str
    questions: tuple[Question, ...]

    def __len__(self) -> int:
        return len(self.questions)

    def answers_for_service(self, answers: dict[str, Any]) -> dict[str, str] | None:
        """The enrolment's ``survey`` object, or None when nothing was answered."""
        out: dict[str, str] = {}
        for q in self.questions:
            value = answers.get(q.id)
            if q.kind == "multiple" and value:
                chosen = set(value)
                out[q.id] = ",".join(c.id for c in q.choices if c.id in chosen)
            elif q.kind == "single" and value in {c.id for c in q.choices}:
                out[q.id] = value
            elif q.kind == "text" and isinstance(value, str) and value.strip():
                out[q.id] = value.strip()[:q.max_length]
        if not out:
            return None
        return {"_survey": self.id, **out}


def _texts(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise SurveyError(f"{where}: 'text' must be a table with fr, lt and en")
    missing = [lang for lang in LANGUAGES if not isinstance(raw.get(lang), str)
               or not raw[lang].strip()]
    if missing:
        raise SurveyError(f"{where}: no text in {', '.join(missing)}")
    unknown = sorted(set(raw) - set(LANGUAGES))
    if unknown:
        raise SurveyError(f"{where}: unknown language {', '.join(unknown)} (fr, lt, en)")
    return {lang: raw[lang].strip() for lang in LANGUAGES}


def _ident(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not IDENT.match(raw):
        raise SurveyError(f"{where}: id {raw!r} must be 1-64 characters: a-z, 0-9, _ and -")
    return raw


def _question(raw: Any, where: str) -> Question:
    if not isinstance(raw, dict):
        raise SurveyError(f"{where}: must be a table")
    unknown = sorted(set(raw) - {"id", "type", "text", "choice", "max_length"})
    if unknown:
        raise SurveyError(f"{where}: unknown key {', '.join(unknown)}")
    qid = _ident(raw.get("id"), where)
    where = f"{where} ({qid})"
    kind = raw.get("type")
    if kind not in KINDS:
        raise SurveyError(f"{where}: type must be one of {', '.join(KINDS)}, not {kind!r}")
    text = _texts(raw.get("text"), where)
    if kind == "text":
        if "choice" in raw:
            raise SurveyError(f"{where}: a text question has no choices")
        max_length = raw.get("max_length", 100)
        if not isinstance(max_length, int) or isinstance(max_length, bool) \
                or not 1 <= max_length <= MAX_VALUE:
            raise SurveyError(f"{where}: max_length must be a number from 1 to {MAX_VALUE}")
        return Question(qid, kind, text, max_length=max_length)
    if "max_length" in raw:
        raise SurveyError(f"{where}: max_length is for text questions only")
    raw_choices = raw.get("choice")
    if not isinstance(raw_choices, list) or len(raw_choices) < 2:
        raise SurveyError(f"{where}: a {kind}-choice question needs at least 2 [[question.choice]]")
    if len(raw_choices) > 8:
        raise SurveyError(f"{where}: at most 8 choices fit on the screen")
    choices = []
    for j, rc in enumerate(raw_choices, 1):
        cwhere = f"{where}, choice {j}"
        if not isinstance(rc, dict) or sorted(rc) != ["id", "text"]:
            raise SurveyError(f"{cwhere}: needs exactly 'id' and 'text'")
        choices.append(Choice(_ident(rc["id"], cwhere), _texts(rc["text"], cwhere)))
    ids = [c.id for c in choices]
    if len(set(ids)) != len(ids):
        raise SurveyError(f"{where}: two choices have the same id")
    if kind == "multiple" and len(",".join(ids)) > MAX_VALUE:
        raise SurveyError(f"{where}: the choice ids joined by commas exceed {MAX_VALUE} "
                          "characters; use shorter ids")
    return Question(qid, kind, text, tuple(choices))


def parse(data: dict[str, Any], source: str = "survey") -> Survey:
    """Check a parsed survey file and return it; raise SurveyError saying what is wrong."""
    unknown = sorted(set(data) - {"id", "question"})
    if unknown:
        raise SurveyError(f"{source}: unknown key {', '.join(unknown)} (id, [[question]])")
    sid = _ident(data.get("id"), f"{source}: the survey")
    raw_questions = data.get("question", [])
    if not isinstance(raw_questions, list):
        raise SurveyError(f"{source}: questions are [[question]] tables")
    if len(raw_questions) > MAX_KEYS - 1:
        raise SurveyError(f"{source}: at most {MAX_KEYS - 1} questions (the service keeps "
                          f"{MAX_KEYS} answers, one of them the survey's id)")
    questions = tuple(_question(q, f"{source}: question {i}")
                      for i, q in enumerate(raw_questions, 1))
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise SurveyError(f"{source}: two questions have the same id")
    return Survey(sid, questions)


def load(path: str | Path | None) -> Survey:
    """Read and check the survey file (the default one when ``path`` is empty)."""
    path = Path(path) if path else DEFAULT_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SurveyError(f"cannot read the survey file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SurveyError(f"{path}: not valid TOML: {exc}") from None
    survey = parse(data, str(path))
    log.info("survey %s: %d questions from %s", survey.id, len(survey), path.name)
    return survey
