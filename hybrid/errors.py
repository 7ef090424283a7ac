"""Errors a user can act on. The CLI prints their message and exits non-zero; nothing else is shown."""

DISTRIBUTION = "hybrid-search-toolkit"
"""The name `pip install` knows us by (the import package and the command are `hybrid`): every message that
tells a user what to install names it, so it lives in one place."""


def install_hint(extra: str | None = None) -> str:
    """The pip command that installs ``extra`` (or the base install)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"


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


class VersionGoneError(HybridError):
    """A version a searcher had pinned was removed (replaced by a write); look up the serving one again."""


class IncompatibleIndexError(HybridError):
    """The index was built with another model or dimension; writing to it would mix vector spaces."""


class MissingExtraError(HybridError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def first_line(error: BaseException) -> str:
    """An exception's first line (its type where it has no message), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_extra(extra: str, *modules: str) -> None:
    """Fail in one line, naming the extra to install, before work that needs an optional package starts."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtraError(
                f"this needs the optional package {module!r}: {install_hint(extra)}"
            ) from None
