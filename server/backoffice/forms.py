"""The back office's forms: WTForms renders them and carries the CSRF token; the pydantic
schemas of the API validate what the services take, so both doors apply the same rules."""

from __future__ import annotations

import re

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from pydantic import BaseModel, ValidationError
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TelField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.widgets import DateInput

CUSTOMER_ID = re.compile(r"^C-?([0-9A-Z]{4})-?([0-9A-Z]{4})$")

# what a staff member is told about a value the schema refused, by field
FIELD_ERRORS = {
    "first_name": _l("A first name is required (up to 80 characters)."),
    "last_name": _l("A last name is required (up to 80 characters)."),
    "email": _l("This email address does not look right."),
    "phone": _l("Use digits, spaces and + only."),
    "birth_date": _l("Give a date as YYYY-MM-DD."),
    "gender": _l("Choose one of the values offered."),
    "address": _l("The address is too long (300 characters at most)."),
    "reason": _l("Say why the data is corrected (120 characters at most, no personal data)."),
    "confirm": _l("Type the customer number exactly as shown to confirm."),
}


def parse(model: type[BaseModel], data: dict) -> tuple[BaseModel | None, dict[str, list[str]]]:
    """``(model(**data), {})``, or ``(None, {field: [message]})`` in the staff's language."""
    try:
        return model(**data), {}
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            message = str(FIELD_ERRORS[field]) if field in FIELD_ERRORS else \
                _("These details are not valid.")
            if message not in errors.get(field, []):
                errors.setdefault(field, []).append(message)
        return None, errors


def parse_customer_id(text: str) -> str | None:
    """``C-7F3K-9Q2M`` from what was typed (any case, dashes optional), or None."""
    match = CUSTOMER_ID.match(re.sub(r"\s+", "", text).upper())
    return f"C-{match[1]}-{match[2]}" if match else None


class LoginForm(FlaskForm):
    username = StringField(_l("User name"), render_kw={"autocomplete": "username"})
    password = PasswordField(_l("Password"), render_kw={"autocomplete": "current-password"})


class SearchForm(FlaskForm):
    # a card read on the desk reader arrives here too: a keyboard-wedge reader types the
    # card's URL and Enter into the field that has the focus
    query = StringField(_l("Name, card, email, phone number or customer number"),
                        render_kw={"autocomplete": "off", "autofocus": True,
                                   "spellcheck": "false"})
    country = SelectField(_l("Country of numbers typed without +33 or +370"), choices=[
        Choice("", _l("my store's country")), Choice("FR", _l("France")),
        Choice("LT", _l("Lithuania"))])


class RectifyForm(FlaskForm):
    first_name = StringField(_l("First name"))
    last_name = StringField(_l("Last name"))
    email = EmailField(_l("Email"))
    phone = TelField(_l("Phone"))
    birth_date = StringField(_l("Date of birth"), widget=DateInput())
    gender = SelectField(_l("Gender"), choices=[
        Choice("", "—"), Choice("female", _l("female")), Choice("male", _l("male")),
        Choice("other", _l("other"))])
    address = TextAreaField(_l("Address"))
    reason = StringField(_l("Reason for the correction"),
                         description=_l("Kept in the audit log: never put personal data here."))

    PERSONAL = ("first_name", "last_name", "email", "phone", "birth_date", "gender", "address")

    def fill(self, personal: dict) -> None:
        """Show the current values."""
        for name in self.PERSONAL:
            getattr(self, name).data = personal.get(name) or ""

    def as_data(self) -> dict:
        """What was typed, for ``RectifyIn``: an emptied field clears the value, but a name
        stays an empty string, which the schema refuses as a name (it cannot be cleared)."""
        data: dict = {name: (getattr(self, name).data or "").strip() for name in self.PERSONAL}
        for name in self.PERSONAL:
            if name not in ("first_name", "last_name"):
                data[name] = data[name] or None
        data["reason"] = (self.reason.data or "").strip()
        return data


class ConsentForm(FlaskForm):
    # the text version shown with the boxes; refused if it is no longer the current one
    version = HiddenField()
    terms = BooleanField()
    marketing_email = BooleanField()
    marketing_sms = BooleanField()
    profiling = BooleanField()

    PURPOSES = ("terms", "marketing_email", "marketing_sms", "profiling")

    def fill(self, current: dict, version: str) -> None:
        self.version.data = version
        for name in self.PURPOSES:
            getattr(self, name).data = bool(current[name]["granted"])

    def decisions(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name).data) for name in self.PURPOSES}


class EraseForm(FlaskForm):
    reason = SelectField(_l("Why"), choices=[
        Choice("customer-request", _l("the customer asked for it")),
        Choice("duplicate", _l("a duplicate account")),
        Choice("other", _l("another reason"))])
    confirm = StringField(_l("Type the customer number again to confirm"),
                          render_kw={"autocomplete": "off"})


class AuditFilterForm(FlaskForm):
    """A GET form: the customer number is pseudonymous, so it may sit in the URL."""

    class Meta:
        csrf = False

    customer_id = StringField(_l("Customer number"))


BLOCK_REASONS = [Choice("lost", _l("lost")), Choice("stolen", _l("stolen")),
                 Choice("damaged", _l("damaged")), Choice("other", _l("another reason"))]
NOTE_HINT = _l("Kept in the audit log: never put personal data here.")


class BlockForm(FlaskForm):
    """Block one card: a lost, stolen or damaged card is refused at every till."""

    card_id = HiddenField()
    reason = SelectField(_l("Why"), choices=BLOCK_REASONS)
    note = StringField(_l("Note (optional)"), description=NOTE_HINT,
                       render_kw={"maxlength": 200})


class UnblockForm(FlaskForm):
    card_id = HiddenField()
    reason = SelectField(_l("Why"), choices=[
        Choice("found", _l("the card was found")),
        Choice("mistake", _l("it was blocked by mistake")),
        Choice("other", _l("another reason"))])
    note = StringField(_l("Note (optional)"), description=NOTE_HINT,
                       render_kw={"maxlength": 200})


class ReissueForm(FlaskForm):
    """A new printed QR card; every other card of the customer stops working."""

    # one id per page shown: a second click, or the page sent again, issues nothing more
    event_id = HiddenField()
    reason = SelectField(_l("Why"), choices=BLOCK_REASONS)
