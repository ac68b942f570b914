"""Segments: saved, validated definitions of a set of customers (``service.members``)."""
