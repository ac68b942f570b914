"""Customers, known to the main database by a neutral id only."""
