"""Errors a user can act on. The CLI prints their message and exits non-zero; nothing else is shown."""


class HybridError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class SourceError(HybridError):
    """The input documents are unusable: the message names the file, line and field."""


class IndexNotFoundError(HybridError):
    """The named index does not exist."""

    def __init__(self, index: str, where: str) -> None:
        super().__init__(
            f"index {index!r} does not exist in {where}; create it with `hybrid ingest SOURCE --index {index}`"
        )


class IncompatibleIndexError(HybridError):
    """The index was built with another model or dimension; writing to it would mix vector spaces."""
