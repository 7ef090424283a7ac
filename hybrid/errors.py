"""Errors a user can act on. The CLI prints their message and exits non-zero; nothing else is shown."""

DISTRIBUTION = "hybrid-search-toolkit"
"""The name `pip install` knows us by (the import package and the command are `hybrid`): every message that
tells a user what to install names it, so it lives in one place."""


def install_hint(extra: str | None = None) -> str:
    """The pip command that installs ``extra`` (or the base install)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"


class HybridError(Exception):
    """Base class of every error hybrid raises on purpose; the message says what went wrong.

    An application maps the subclasses to its own answers (404, 400, 429, 503, ...): see
    :class:`IndexNotFoundError`, :class:`BadRequestError`, :class:`OverloadedError`,
    :class:`ClusterUnavailableError`. ``status`` is the HTTP status the cluster answered, where one came back;
    ``retriable`` says whether the same call may succeed later unchanged. The error a cluster's client raised
    is kept as ``__cause__``."""

    retriable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceError(HybridError):
    """The input documents are unusable: the message names the file, line and field."""


class BadRequestError(HybridError, ValueError):
    """The query, its settings or the index name cannot be served as given (an application's 400). It is a
    ValueError too, as every argument a search refuses is."""


class IndexNotFoundError(HybridError):
    """The named index does not exist (an application's 404)."""

    def __init__(self, index: str, where: str, *, status: int | None = None) -> None:
        super().__init__(f"index {index!r} does not exist in {where}", status=status)
        self.index = index


class VersionGoneError(HybridError):
    """A version a searcher had pinned was removed (replaced by a write); look up the serving one again."""


class IncompatibleIndexError(HybridError):
    """The index was built with another model or dimension; writing to it would mix vector spaces."""


class ServerModelError(IncompatibleIndexError):
    """A search asked the cluster to embed its query, but the index (``.index``) records no model deployed
    there, or the one it records cannot serve: undeployed, deleted, or still being deployed again after a
    node restart (an application's 500, as docs/application.md's table says)."""

    def __init__(self, message: str, index: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.index = index


class DamagedIndexError(HybridError):
    """A version of an embedded index is damaged or incomplete (a file missing, or not fitting the rest): an
    application's 500. Rolling back to the version before it, or ingesting again, mends it."""


class ClusterUnavailableError(HybridError):
    """The cluster could not be reached, or answered with a server error or not as a cluster does (an
    application's 503). Retriable: the same call may succeed once the cluster is back."""

    retriable = True


class NotAClusterError(ClusterUnavailableError):
    """Something answered at the cluster's address, but not as OpenSearch does (a proxy in front of a node
    being replaced, another service on the port)."""


class OverloadedError(HybridError):
    """The cluster refused the request for now (HTTP 429: queues full, a circuit breaker): an application's
    429. Retriable, after a pause."""

    retriable = True

    def __init__(self, message: str, *, status: int | None = 429) -> None:
        super().__init__(message, status=status)


class CredentialsRefusedError(HybridError):
    """The cluster refused the credentials, or the user may not do this (HTTP 401 or 403)."""


class GateError(HybridError):
    """A change its own evidence does not support (tuned settings that scored below the defaults, a
    fine-tuned model that failed its evaluation), refused unless the caller says ``force``."""


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
