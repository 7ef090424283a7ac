"""hybrid: BM25 + dense-vector search fused with reciprocal rank fusion, locally or on OpenSearch.

Importing this package stays light (no click, torch or plotting) so a web backend can import it on
every start; the query encoder (an ONNX export, no torch) loads on the first query.
"""

__version__ = "0.1.0"

from .fusion import LegRank, rrf  # noqa: E402
from .searcher import Hit, Searcher  # noqa: E402

__all__ = ["Hit", "LegRank", "Searcher", "__version__", "rrf"]
