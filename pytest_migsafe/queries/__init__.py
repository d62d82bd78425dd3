"""Statement capture for each driver, shapes, call sites, budgets, N+1 and scaling checks."""
