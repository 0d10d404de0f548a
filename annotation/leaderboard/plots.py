"""The leaderboard page's plots as server-rendered SVG geometry, from a board built by
annotation/leaderboard/selectors.py: ratings with their intervals, online Elo over battles,
and the win-rate matrix as coloured table rows. Plain Python."""

import math

PALETTE = (
    "#2457d6", "#d97706", "#7c3aed", "#059669", "#dc2626",
    "#0891b2", "#be185d", "#65a30d", "#4b5563", "#b45309",
)  # fmt: skip
_NICE_STEPS = (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    step = next((s for s in _NICE_STEPS if (high - low) / s <= count), _NICE_STEPS[-1])
    first = math.ceil(low / step) * step
    return [first + step * index for index in range(int((high - first) // step) + 1)]


def _span(low: float, high: float, minimum: float) -> tuple[float, float]:
    if high - low < minimum:
        middle = (high + low) / 2
        low, high = middle - minimum / 2, middle + minimum / 2
    pad = (high - low) * 0.05
    return low - pad, high + pad


LABEL_CHAR_PX = 7  # about one character of the plot's 12px labels


def ratings_plot(board: dict, *, plot_width: int = 550, row: int = 22) -> dict:
    """Each model's rating as a dot on its interval bar, best at the top. The label column
    is as wide as the longest model name, so no name is cut."""
    models = board["models"]
    if not models:
        return {}
    left = max(170, 20 + LABEL_CHAR_PX * max(len(m["model"]) for m in models))
    width = left + plot_width
    low, high = _span(min(m["lower"] for m in models), max(m["upper"] for m in models), minimum=40)
    right = width - 70
    top, bottom = 10, 10 + row * len(models)

    def x(value):
        return round(left + (value - low) / (high - low) * (right - left), 1)

    return {
        "width": width,
        "height": bottom + 30,
        "left": left,
        "right": right,
        "bottom": bottom,
        "label_x": left - 10,
        "axis_y": bottom + 18,
        "rows": [
            {
                "model": m["model"],
                "y": top + row * index + row / 2,
                "x": x(m["rating"]),
                "x_lower": x(m["lower"]),
                "x_upper": x(m["upper"]),
                "rating": m["rating"],
                "lower": m["lower"],
                "upper": m["upper"],
            }
            for index, m in enumerate(models)
        ],
        "ticks": [{"x": x(value), "label": f"{value:g}"} for value in _ticks(low, high)],
    }


def elo_plot(board: dict, *, width: int = 720, height: int = 300) -> dict:
    """Online Elo after each battle (sampled), one line per model, over battle number."""
    history = [line for line in board["elo_history"] if line["points"]]
    if not history:
        return {}
    left, right, top, bottom = 60, width - 20, 10, height - 30
    values = [value for line in history for _, value in line["points"]]
    low, high = _span(min(values), max(values), minimum=20)
    last = max(board["battles"], 2)

    def x(number):
        return round(left + (number - 1) / (last - 1) * (right - left), 1)

    def y(value):
        return round(bottom - (value - low) / (high - low) * (bottom - top), 1)

    return {
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "y_label_x": left - 6,
        "axis_y": bottom + 18,
        "lines": [
            {
                "model": line["model"],
                "color": PALETTE[index % len(PALETTE)],
                "points": " ".join(f"{x(n)},{y(v)}" for n, v in line["points"]),
            }
            for index, line in enumerate(history)
        ],
        "y_ticks": [{"y": y(value), "label": f"{value:g}"} for value in _ticks(low, high, 5)],
        "x_ticks": [
            {"x": x(number), "label": f"{number:g}"} for number in _ticks(1, last, 6) if number >= 1
        ],
    }


def _cell_colour(rate: float | None) -> str:
    """White at 0.5, green towards 1, red towards 0."""
    if rate is None:
        return ""
    hue = 140 if rate >= 0.5 else 0
    lightness = round(100 - 50 * abs(rate - 0.5) * 2)
    return f"background-color: hsl({hue}, 65%, {lightness}%)"


def win_rate_rows(board: dict) -> list[dict]:
    """The win-rate matrix as table rows, each cell with its colour."""
    matrix = board["win_rates"]
    return [
        {
            "model": model,
            "cells": [
                {
                    "rate": rate,
                    "count": count,
                    "style": _cell_colour(rate),
                    "opponent": opponent,
                    "self": row == column,
                }
                for column, (opponent, rate, count) in enumerate(
                    zip(matrix["models"], matrix["rates"][row], matrix["counts"][row], strict=True)
                )
            ],
        }
        for row, model in enumerate(matrix["models"])
    ]
