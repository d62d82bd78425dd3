"""A small shop application used by the examples: users, addresses, orders."""
