"""AI feedback: constitutions, LLM judges and their jobs (Constitutional AI, RLAIF)."""
