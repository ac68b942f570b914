"""Message templates: Jinja's sandbox, a fixed set of placeholders, SMS length and parts."""

from __future__ import annotations

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# what a template may name: nothing else of the customer reaches a message
PLACEHOLDERS = ("first_name", "points", "tier", "customer_code", "unsubscribe_url")
LANGUAGES = ("fr", "lt", "en")
EMAIL_PARTS = ("subject", "text", "html")
SMS_PARTS = ("text",)
SAMPLE = {"first_name": "Élodie", "points": 120, "tier": "silver",
          "customer_code": "C-7F3K-9Q2M", "unsubscribe_url": "https://shop.example/u/…"}

_plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_html = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)

# GSM 03.38 basic set (and the extension table, whose characters count twice)
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNO"
           "PQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXT = set("^{}\\[~]|€\f")


class TemplateError(ValueError):
    """A template that does not parse or names a placeholder outside the safe set."""


def check(source: str) -> None:
    """Raise ``TemplateError`` if ``source`` is not a template we may render."""
    try:
        names = meta.find_undeclared_variables(_plain.parse(source))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    unknown = sorted(set(names) - set(PLACEHOLDERS))
    if unknown:
        raise TemplateError("unknown placeholder(s): " + ", ".join(unknown))


def check_all(channel: str, templates: dict) -> dict[str, str]:
    """Errors by ``"language.part"``; an empty dict when every template is usable."""
    errors = {}
    parts = EMAIL_PARTS if channel == "email" else SMS_PARTS
    if not templates:
        errors["templates"] = "at least one language is needed"
    for language, parts_of in templates.items():
        if language not in LANGUAGES:
            errors[language] = "unknown language"
            continue
        for part in parts:
            source = parts_of.get(part) or ""
            if not source.strip() and part != "html":
                errors[f"{language}.{part}"] = "empty"
                continue
            try:
                check(source)
            except TemplateError as exc:
                errors[f"{language}.{part}"] = str(exc)
    return errors


def pick(templates: dict, language: str) -> tuple[str, dict]:
    """The customer's language if the campaign has it, else English, else the first."""
    for candidate in (language, "en", *templates):
        if candidate in templates:
            return candidate, templates[candidate]
    raise LookupError("no template")


def render(templates: dict, language: str, values: dict) -> tuple[str, dict[str, str]]:
    """``(language used, {part: text})`` for one customer."""
    used, parts = pick(templates, language)
    out = {}
    for part, source in parts.items():
        if not source:
            continue
        env = _html if part == "html" else _plain
        out[part] = env.from_string(source).render(**{k: values.get(k) for k in PLACEHOLDERS})
    return used, out


def sms_parts(text: str) -> dict:
    """Length, encoding and number of parts an SMS of ``text`` takes (as billed)."""
    if all(c in GSM7 or c in GSM7_EXT for c in text):
        length = sum(2 if c in GSM7_EXT else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        # UCS-2 counts UTF-16 code units: an emoji takes two
        length = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    parts = 1 if length <= single else -(-length // multi)
    return {"length": length, "encoding": encoding, "parts": parts if text else 0}
