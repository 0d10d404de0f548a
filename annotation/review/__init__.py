"""Review and quality: reviewers' decisions on judgments, gold items, flagged tasks, and the
quality figures (agreement, gold accuracy, time per item, trends), the review queue and a
labeler's own page.

``services`` holds the writes, ``selectors`` the reads, ``agreement_math`` the
inter-annotator agreement measures (Krippendorff's alpha, pairwise Kendall's tau; no
database), ``views`` and ``urls`` the pages.
"""
