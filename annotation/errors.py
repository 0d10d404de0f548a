"""Moved to config/errors.py (shared plumbing). This re-export stays only until the files
still importing the old path in HEAD are committed with their moves; then it goes."""

from config.errors import Conflict, NotAssigned, ServiceError

__all__ = ["Conflict", "NotAssigned", "ServiceError"]
