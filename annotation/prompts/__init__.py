"""Prompts: the project's prompt pool, imported from JSONL or CSV files and listed."""
