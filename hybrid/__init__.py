"""hybrid: BM25 + dense-vector search fused by reciprocal rank or normalised scores, locally or on OpenSearch.

Importing this package stays light (no click, torch or plotting) so a web backend can import it on
every start; the query encoder (an ONNX export, no torch) loads on the first query.
"""

from .async_searcher import AsyncSearcher
from .errors import (
    BadRequestError,
    ClusterUnavailableError,
    CredentialsRefusedError,
    DamagedIndexError,
    HybridError,
    IncompatibleIndexError,
    IndexNotFoundError,
    NotAClusterError,
    OverloadedError,
    ServerModelError,
)
from .fusion import Fusion, LegRank, rrf
from .hits import Hit
from .searcher import Searcher
from .settings import SearchSettings
from .version import __version__

__all__ = [
    "AsyncSearcher", "BadRequestError", "ClusterUnavailableError", "CredentialsRefusedError", "DamagedIndexError",
    "Fusion", "Hit", "HybridError", "IncompatibleIndexError", "IndexNotFoundError", "LegRank", "NotAClusterError",
    "OverloadedError", "SearchSettings", "Searcher", "ServerModelError", "__version__", "rrf",
]
