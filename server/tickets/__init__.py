"""Warranty claims, support issues and complaints (tickets), and the products catalogue that
gives each product its warranty in months."""
