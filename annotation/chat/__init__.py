"""Chat labeling: talk to a model, pick one of its two replies each turn, rate the whole chat."""
