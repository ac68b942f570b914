"""Enrolment at the kiosk: a new customer, their consents and their personal data."""
