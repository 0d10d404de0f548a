class ServiceError(Exception):
    """A request the product refuses, with a message fit to show the user."""

    status_code = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotAssigned(ServiceError):
    status_code = 403


class Conflict(ServiceError):
    status_code = 409


class NotFound(ServiceError):
    """What the caller names does not exist for them (or belongs to another workspace,
    which is never confirmed)."""

    status_code = 404
