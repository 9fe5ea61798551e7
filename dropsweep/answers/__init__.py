"""Stored trials into plain numbers: rows, the one ranking, selection, statistics, verdicts, the answer."""
