"""Taps at the till: card -> customer record, each tap a visit."""
