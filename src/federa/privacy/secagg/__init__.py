"""SecAgg+ secure aggregation (Bell et al. 2020): the server sees only the cohort's sum.

Needs the `cryptography` package (the `privacy` extra).
"""

from federa.privacy.secagg.crypto import TamperedError
from federa.privacy.secagg.graph import default_degree, default_threshold, neighbour_graph
from federa.privacy.secagg.participant import ProtocolError
from federa.privacy.secagg.server import AGGREGATE_ID, SecAggPlus
from federa.privacy.secagg.wire import MalformedError

__all__ = [
    "AGGREGATE_ID",
    "MalformedError",
    "ProtocolError",
    "SecAggPlus",
    "TamperedError",
    "default_degree",
    "default_threshold",
    "neighbour_graph",
]
