"""Candidates: pairing generated replies into comparison tasks by the project's candidate
policy (generation jobs themselves still live in models_registry)."""
