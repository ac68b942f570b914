"""Customer value: a score per customer, explained (``service``)."""
