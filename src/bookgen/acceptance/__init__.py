"""Acceptance: load runs, capacity search and `bookgen verify` measuring the six targets."""
