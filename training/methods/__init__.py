"""Training methods: plain functions from (config, dataset file, base model) to artifacts.

Each method lives in its own module (``dpo.py``, ...) with a config dataclass and a
``train_*`` function; shared pieces are in ``common.py``. Nothing in this package imports
Django (``training/tasks.py`` is the only bridge), and importing the package itself is
cheap: torch and transformers load with the method modules.
"""
