"""Errors raised by the LLM client. Their text never carries the API key or prompt text."""

from __future__ import annotations


class LLMError(Exception):
    """A failed chat-completions call.

    `status` is the HTTP status when there was one; `retryable` says whether the client retries
    it (429, 5xx, timeouts, connection errors). `error_type` is the low-cardinality label the
    hooks record ("429", "500", "timeout", an exception class name); `reason` is the retry reason
    (`rate_limited | server_error | timeout | connection`) or None for non-retryable errors.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retryable: bool = False,
        *,
        error_type: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.error_type = error_type or (str(status) if status is not None else "LLMError")
        self.reason = reason
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"

    def public(self) -> str:
        """What a client may read of this failure: our words and the status, never the
        provider's text (it can quote the request back) or an exception's."""
        if self.reason == "timeout":
            return "the LLM provider did not answer in time"
        if self.reason == "connection":
            return "the LLM provider could not be reached"
        if self.status is not None:
            return f"the LLM provider refused the request (HTTP {self.status})"
        return "the LLM provider's answer could not be used"

    def __repr__(self) -> str:
        return (
            f"LLMError({self.message!r}, status={self.status!r}, retryable={self.retryable!r}, "
            f"error_type={self.error_type!r})"
        )


class LLMConfigError(LLMError):
    """The client cannot be built from the settings (no base URL and no API key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, False, error_type="config")
