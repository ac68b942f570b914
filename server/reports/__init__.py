"""Reports for managers: best sellers, visits, habits across stores, seller indicators."""
