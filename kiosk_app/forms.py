"""The enrolment form: what the customer types, validated before anything is sent."""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, StringField, TelField
from wtforms.validators import UUID, DataRequired, Email, Length, Optional, Regexp

PHONE = re.compile(r"^\+?[0-9 ().-]{6,24}$")


class EnrolForm(FlaskForm):
    event_id = HiddenField(validators=[UUID()])
    first_name = StringField(_l("First name"), validators=[
        DataRequired(_l("Please enter your first name.")), Length(max=80)])
    last_name = StringField(_l("Last name"), validators=[
        DataRequired(_l("Please enter your last name.")), Length(max=80)])
    email = EmailField(_l("Email"), validators=[
        Optional(), Email(_l("This email address does not look right.")), Length(max=254)])
    phone = TelField(_l("Phone"), validators=[
        Optional(), Regexp(PHONE, message=_l("Use digits, spaces and + only."))])
    terms = BooleanField(validators=[
        DataRequired(_l("Please accept the programme terms to get a card."))])
    marketing_email = BooleanField()
    marketing_sms = BooleanField()
    profiling = BooleanField()

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        if not (self.email.data or self.phone.data):
            self.email.errors = [*self.email.errors,
                                 _l("Please give an email address or a phone number.")]
            ok = False
        return ok
