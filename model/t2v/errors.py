"""One exception class per way text-to-video can fail; each message says what to do next."""

from __future__ import annotations


class T2VError(RuntimeError):
    """Base class for text-to-video failures."""


class T2VModelNotFound(T2VError):
    """The pipeline directory is missing or is not a diffusers pipeline (no model_index.json)."""


class T2VConfigError(T2VError):
    """A backend option or a pipeline profile file is invalid for this pipeline or device."""


class InvalidVideoParams(ValueError):
    """A job asked for parameters the loaded pipeline cannot honour.

    `parameter` names the offending field; the message names it and its allowed range.
    """

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
