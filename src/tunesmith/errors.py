"""Errors a user can cause. The CLI prints these without a traceback and exits with code 2.

Every message names where the problem is (file and line, or field) and what was expected, e.g.

    data/train.jsonl:17: field "generated" must be a list of strings (got int)
"""

from __future__ import annotations


class TunesmithError(Exception):
    """Base class for every error caused by user input (files, flags, requests, model names)."""

    exit_code = 2


class DataError(TunesmithError):
    """A data file or record is malformed. `where` is "FILE:LINE" (or "FILE") when known."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(TunesmithError):
    """A config file, CLI override or option value is invalid."""


class ModelError(TunesmithError):
    """A model or adapter cannot be found or loaded (unknown path, wrong architecture, missing CUDA)."""
