"""The leaderboard: model versions rated from the battles in their projects' judgments.

``ratings_math`` is the maths (online Elo, Bradley-Terry with bootstrap intervals, win
rates; numpy only, no Django), ``selectors`` reads battles and builds the board, ``plots``
turns a board into SVG geometry for the page, ``views`` and ``api`` are the page and the
DRF endpoint, ``urls`` their routes.
"""
