"""Loyalty cards: signed tokens, issue, replacement and revocation."""
