"""Models of the macro (golden, cycle, full-scale) and the networks they are asked about."""
