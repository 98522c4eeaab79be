"""Server side: the round loop and its History."""

from federa.server.history import History, RoundRecord
from federa.server.loop import run_round, run_rounds

__all__ = ["History", "RoundRecord", "run_round", "run_rounds"]
