def __getattr__(name):
    """``from models_registry import ml`` still finds the engine's ml (now
    models_registry/engine/ml.py) until the last files importing it that way are committed
    with their owners' work; then this goes."""
    if name == "ml":
        from models_registry.engine import ml

        return ml
    raise AttributeError(f"module 'models_registry' has no attribute {name!r}")
