"""The forms of the enrolment steps: what the customer types, checked before anything is sent.

Each step's form validates only its own fields; the values live in the session between steps
(``kiosk_app.views``), so going back and forth never loses them.
"""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField, TelField, ValidationError
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp
from wtforms.widgets import PasswordInput

PHONE = re.compile(r"^\+?[0-9 ().-]{6,24}$")
PIN = re.compile(r"^[0-9]{4,6}$")
CONSENTS = ("terms", "marketing_email", "marketing_sms", "profiling")


class DetailsForm(FlaskForm):
    first_name = StringField(_l("First name"), validators=[
        DataRequired(_l("Please enter your first name.")), Length(max=80)])
    last_name = StringField(_l("Last name"), validators=[
        DataRequired(_l("Please enter your last name.")), Length(max=80)])
    email = EmailField(_l("Email"), validators=[
        Optional(), Email(_l("This email address does not look right.")), Length(max=254)])
    phone = TelField(_l("Phone"), validators=[
        Optional(), Regexp(PHONE, message=_l("Use digits, spaces and + only."))])

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        if not (self.email.data or "").strip() and not (self.phone.data or "").strip():
            self.email.errors = [*self.email.errors,
                                 _l("Please give an email address or a phone number.")]
            ok = False
        return ok

    def values(self) -> dict[str, str]:
        """What the session keeps of this step (stripped; empty fields as "")."""
        return {name: (getattr(self, name).data or "").strip()
                for name in ("first_name", "last_name", "email", "phone")}


class ConsentsForm(FlaskForm):
    terms = BooleanField(validators=[
        DataRequired(_l("Please accept the programme terms to get a card."))])
    marketing_email = BooleanField()
    marketing_sms = BooleanField()
    profiling = BooleanField()

    def values(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name).data) for name in CONSENTS}


CARD_KINDS = {"nfc": _l("NFC card"), "qr": _l("Printed QR card"), "both": _l("Both")}
CARD_HINTS = {"nfc": _l("Tap it on the reader at the till."),
              "qr": _l("Printed here; show it at the till."),
              "both": _l("An NFC card and a printed card.")}


class CardForm(FlaskForm):
    choice = StringField()
    # shown as dots, but kept when the customer goes back and forth
    pin = PasswordField(_l("PIN (optional)"), widget=PasswordInput(hide_value=False),
                        validators=[Optional(), Regexp(PIN, message=_l("A PIN is 4 to 6 digits."))])

    def __init__(self, *args, kinds: tuple[str, ...] = tuple(CARD_KINDS), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kinds = kinds  # the cards this kiosk can make (no writer: no NFC)

    def validate_choice(self, field) -> None:
        if field.data not in self.kinds:
            raise ValidationError(_l("Please choose a card."))

    def values(self) -> dict[str, str]:
        return {"choice": self.choice.data or "", "pin": (self.pin.data or "").strip()}
