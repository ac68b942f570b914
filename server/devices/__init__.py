"""Devices (kiosks and tills) and how they authenticate."""
