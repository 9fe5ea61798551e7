"""A study and what runs it: opening, asking, balance, liveness, the runner, workers, confirm, test, export."""
