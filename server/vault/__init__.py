"""The vault: personal data, encrypted per customer, in its own database."""
