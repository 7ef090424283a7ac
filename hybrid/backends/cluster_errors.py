"""A search cluster's failures as hybrid's errors, for OpenSearch's client and Elasticsearch's alike.

The two Python clients raise errors of their own classes, but with the same shape (``status_code``, ``error``
— the error's type — and ``info``, the JSON answer); ``ClientErrors`` names one client's classes, and
everything else here is common: which failure an application sees (``hybrid.errors``), which may be sent
again, and how a retry is said.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import (
    BadRequestError,
    ClusterUnavailableError,
    CredentialsRefusedError,
    HybridError,
    IndexNotFoundError,
    NotAClusterError,
    OverloadedError,
    VersionGoneError,
)
from .base import VERSION_NAME

RETRY_STATUSES = (429, 502, 503, 504)
log = logging.getLogger("hybrid")


class LegFailed(Exception):
    """A search of an ``_msearch`` that failed on the cluster's side (a node left mid-search) while the
    request itself succeeded: raised as the whole request's failure, so that it is sent again rather than
    answered from part of the index. Shaped as the clients' errors are."""

    def __init__(self, status_code: int, error: str, info: dict[str, Any]) -> None:
        super().__init__(status_code, error)
        self.status_code, self.error, self.info = status_code, error, info


@dataclass(frozen=True)
class ClientErrors:
    """One client's exception classes, and the engine's name for messages."""

    product: str
    """``OpenSearch`` or ``Elasticsearch``."""
    not_found: type[Exception]
    refused: tuple[type[Exception], ...]
    """Credentials refused (401) or not allowed (403)."""
    not_the_product: tuple[type[Exception], ...]
    """An answer no node of the product gives: a proxy's page, another service."""
    no_answer: tuple[type[Exception], ...]
    """Nothing answered: connection refused or lost, a timeout, TLS."""
    answered: tuple[type[Exception], ...]
    """Any other HTTP error answer."""
    unreadable: tuple[type[Exception], ...]
    """A body that is not JSON: an answer of something else, or a request that cannot be sent (never retried)."""

    @property
    def any(self) -> tuple[type[Exception], ...]:
        return (self.not_found, *self.refused, *self.unreadable, *self.not_the_product, *self.no_answer,
                *self.answered, LegFailed)


@contextmanager
def translated_errors(errors: ClientErrors, location: str, index: str | None = None) -> Iterator[None]:
    """Turn client errors into one-line errors an application can map (see ``hybrid.errors``), each keeping
    the client's error as its cause and the HTTP status where one came back; ``index`` is what was asked
    for, where a missing index means that index is missing. Sync and async requests alike."""
    product = errors.product
    try:
        yield
    except errors.not_found as error:
        if index is not None and _kind(error) == "index_not_found_exception":
            if VERSION_NAME.fullmatch(index):
                raise VersionGoneError(f"{index} is gone from {location}", status=404) from error
            raise IndexNotFoundError(index, location, status=404) from error
        if not isinstance(_info(error), dict):
            raise not_the_product(product, location, 404) from error
        raise HybridError(f"{product} at {location}: {_kind(error)} ({reason(error)})", status=404) from error
    except errors.refused as error:
        raise CredentialsRefusedError(f"{product} at {location} refused the credentials (HTTP {_status(error)})",
                                      status=_status(error)) from error
    except errors.unreadable + errors.not_the_product as error:
        raise not_the_product(product, location, _status(error) or 200) from error
    except errors.no_answer as error:
        cause = getattr(error, "info", None)  # opensearch-py's: the connection's own error
        raise ClusterUnavailableError(
            f"cannot reach {product} at {location} ({type(cause or error).__name__})") from error
    except errors.answered + (LegFailed,) as error:
        if not isinstance(_info(error), dict):
            raise not_the_product(product, location, _status(error)) from error
        raise answered(f"{product} at {location} answered {_status(error)} {_kind(error)}: {reason(error)}",
                       _status(error)) from error


def not_the_product(product: str, location: str, status: int | None) -> NotAClusterError:
    return NotAClusterError(
        f"{location} answered HTTP {status} without an {product} response: is it an {product} cluster?",
        status=status)


def answered(message: str, status: Any) -> HybridError:
    """The error for an answer the cluster gave: overloaded (429), unavailable (5xx), a bad request (400)."""
    code = status if isinstance(status, int) else None
    if code == 429:
        return OverloadedError(message)
    if code is not None and code >= 500:
        return ClusterUnavailableError(message, status=code)
    if code == 400:
        return BadRequestError(message, status=code)
    return HybridError(message, status=code)


def worth_retrying(errors: ClientErrors, error: Exception, attempt: int, attempts: int) -> bool:
    """Whether a failed request may be sent again: attempts are left, and no answer came (or a page of a proxy
    in front of a node that is away: a 404 or 5xx), or the cluster answered 429 or 502-504. Another product's
    answer, or a body that cannot be read or written, would be the same again."""
    if isinstance(error, errors.unreadable):
        return False
    status = _status(error)
    proxied = isinstance(error, errors.not_the_product) and (status or 0) >= 404  # a page for a node away
    return attempt < attempts and (proxied or isinstance(error, errors.no_answer) or status in RETRY_STATUSES)


def announce_retry(problem: str, attempt: int, attempts: int, said: list[str] | None = None) -> float:
    """Log that ``problem`` is tried again (and add it to ``said``); the pause before it: 1, 2, 4 ... s."""
    pause = 2 ** (attempt - 1)
    log.warning("%s; trying again in %d s (attempt %d of %d)", problem, pause, attempt + 1, attempts)
    if said is not None:
        said.append(problem)
    return pause


def short_reason(error: Exception) -> str:
    """An error's status, or its kind where nothing answered."""
    status = _status(error)
    return str(status) if status is not None else type(error).__name__


def _status(error: Exception) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def _info(error: Exception) -> Any:
    return getattr(error, "info", None)


def _kind(error: Exception) -> str:
    """The error's type as the cluster named it (``index_not_found_exception``)."""
    return str(getattr(error, "error", type(error).__name__))


def reason(error: Exception) -> str:
    """What the cluster said went wrong, or the kind of error."""
    info = _info(error)
    detail = info.get("error", {}) if isinstance(info, dict) else {}
    return str(detail.get("reason", _kind(error))) if isinstance(detail, dict) else str(detail)
