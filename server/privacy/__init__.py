"""Consent and the audit log of personal-data access."""
