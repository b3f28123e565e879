"""Errors a user can act on: each says what went wrong and how to fix it."""

from __future__ import annotations


class SelfcorrectError(Exception):
    """Base of every error meant for a person: `what` happened, `fix` says what to do."""

    def __init__(self, what: str, fix: str = ""):
        self.what = what
        self.fix = fix
        super().__init__(f"{what} — {fix}" if fix else what)


class ConfigError(SelfcorrectError):
    """A configuration file, flag or model spec is invalid."""


class ModelNotFoundError(SelfcorrectError):
    """A model file or the package that carries it is missing."""


class BackendUnavailableError(SelfcorrectError):
    """A backend's library is not installed, or its server cannot be reached."""


class ModelRequestError(SelfcorrectError):
    """A model server rejected a request in a way that retrying will not fix."""
