"""The policy oracle: a stable embedding API and a JSON-lines server (``sbsopt oracle``).

Examples
--------
>>> from sbsopt.oracle import answer_line
>>> answer_line(b'{"id": "w", "phase": "verify"}')[:40]
b'{"id":"w","status":"error","error":{"fie'
"""

from sbsopt.oracle.schema import DecodeProblem, PrefillProblem
from sbsopt.oracle.server import OracleError, answer_line, answer_problem, parse_line, serve

__all__ = [
    "PrefillProblem",
    "DecodeProblem",
    "OracleError",
    "parse_line",
    "answer_problem",
    "answer_line",
    "serve",
]
