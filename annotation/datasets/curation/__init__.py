"""Curation steps, plain Python (no Django): personal data, duplicates, language, quality.

Each step reads a row's texts and says what to do with it; annotation/datasets/versions.py
runs them over a dataset version's rows and counts what each removed or changed.
"""
