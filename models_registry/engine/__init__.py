"""The registry's engine: loading, generation, best-of-n, reward scoring and serving.

Plain Python on torch and transformers: no Django and nothing of ours outside this package
(import-linter's engine-plain-python contract). ``models_registry/services.py`` calls it
and owns the rows; the training methods may use it too.
"""
