"""Why a task stops early: errors a handler raises, and the fencing refusals the runner sees."""


class TransientError(Exception):
    """A failure worth retrying (rate limited, 5xx, timeout); `retry_after_s` when the server said."""

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """A failure retrying cannot fix: the task ends FAILURE with this code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class LeaseLost(Exception):
    """This execution no longer holds the task's lease: another worker has taken the task over."""


class TaskCancelled(Exception):
    """The task was cancelled: this execution stops and publishes nothing more."""
