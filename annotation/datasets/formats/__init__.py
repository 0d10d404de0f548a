"""Readers of the dataset files researchers bring (TRL, HH-RLHF, UltraFeedback, OASST,
Stack Exchange, SFT, prompts), plain Python: each turns a file's records into
``records.ImportedRecord`` values that annotation/datasets/imports.py stores."""
