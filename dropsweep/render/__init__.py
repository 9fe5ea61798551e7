"""Formatting only: the report, the answer, tables, progress and plots, from numbers computed elsewhere."""
