"""Outgoing mail: one function, ``send``, over SMTP or into a folder (the default)."""
