"""Request traces: the :class:`Workload` table and the loaders of the bundled public traces.

Formats (any file in one of them can be passed by path):

- Azure 2023 CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens`` (wall-clock timestamps).
- Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``
  (512-token prefix blocks). Timestamps are quantized to ~3 s buckets, so each arrival gets
  seeded uniform jitter inside its bucket (``jitter_s``).
- Length-only CSV: ``num_prefill_tokens,num_decode_tokens,...`` paired with a synthetic arrival
  process (:func:`~sbsopt.workload.arrivals.synthetic_arrivals`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from sbsopt._resources import traces_dir
from sbsopt._seed import SeedLike, as_generator
from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError, TraceFormatError
from sbsopt.workload.arrivals import synthetic_arrivals

__all__ = ["Workload", "load_trace", "BUNDLED_TRACES"]

BUNDLED_TRACES: dict[str, str] = {
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "mooncake-conv": "mooncake_fast25_conversation_trace.jsonl",
    "sharegpt": "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}

_DEFAULT_SYNTHETIC_RATE = 5.0  # req/s for length-only traces when no rate is given


@dataclass(frozen=True)
class Workload:
    """A request trace: arrival times and token lengths, sorted by arrival.

    Attributes
    ----------
    arrival_s : float64[N]
        Arrival times in seconds, sorted, first at 0.
    input_tokens, output_tokens : int64[N]
        Prompt and generated tokens (output >= 1: the first token comes from prefill).
    block_hashes : tuple of int64 arrays or None
        Prefix-block hashes (512-token blocks) per request; Mooncake only.
    name : str
        Trace name (bundled name or file stem).

    Examples
    --------
    >>> wl = Workload.from_arrays([0.0, 1.0], [100, 200], [5, 6], name="tiny")
    >>> len(wl), wl.with_rate(4.0).arrival_s.tolist()
    (2, [0.0, 0.25])
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    block_hashes: tuple[np.ndarray, ...] | None = None
    name: str = "workload"
    block_tokens: int = 512
    meta: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_arrays(
        cls,
        arrival_s,
        input_tokens,
        output_tokens,
        *,
        block_hashes=None,
        name: str = "workload",
    ) -> Workload:
        """Validated constructor: sorts by arrival (stable) and shifts the first arrival to 0.

        Parameters
        ----------
        arrival_s : array_like of float
            Arrival times in seconds (finite, any order).
        input_tokens, output_tokens : array_like of int
            Prompt and generation lengths, each >= 1, one per arrival.
        block_hashes : sequence of array_like of int, optional
            Per request, the hashes of its prompt's KV blocks (for prefix caching).
        name : str, default "workload"
            Label carried into results.

        Returns
        -------
        Workload
            The requests in arrival order.

        Raises
        ------
        InvalidInputError
            If the arrays differ in length or are not 1-D, an arrival is not finite, or a
            length is below 1.

        Examples
        --------
        >>> wl = Workload.from_arrays([2.0, 1.0], [100, 200], [5, 6], name="two")
        >>> wl.arrival_s.tolist(), wl.input_tokens.tolist()
        ([0.0, 1.0], [200, 100])
        """
        arrival = np.asarray(arrival_s, dtype=np.float64)
        inp = np.asarray(input_tokens, dtype=np.int64)
        out = np.asarray(output_tokens, dtype=np.int64)
        for label, arr in (("arrival_s", arrival), ("input_tokens", inp), ("output_tokens", out)):
            if arr.ndim != 1 or len(arr) != len(arrival):
                raise InvalidInputError(f"{label}.shape", arr.shape, f"({len(arrival)},)")
        if len(arrival) and not np.isfinite(arrival).all():
            i = int(np.argmin(np.isfinite(arrival)))
            raise InvalidInputError(f"arrival_s[{i}]", float(arrival[i]), "a finite number")
        for label, arr in (("input_tokens", inp), ("output_tokens", out)):
            if len(arr) and (arr < 1).any():
                i = int(np.argmax(arr < 1))
                raise InvalidInputError(f"{label}[{i}]", int(arr[i]), "an integer >= 1")
        order = np.argsort(arrival, kind="stable")
        if len(arrival):
            arrival = arrival - arrival[order[0]]
        hashes = None
        if block_hashes is not None:
            hashes = tuple(np.asarray(block_hashes[i], dtype=np.int64) for i in order)
        return cls(arrival[order], inp[order], out[order], hashes, name)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def scaled(self, factor: float) -> Workload:
        """Same requests at ``factor`` times the arrival rate (arrival times divided by it).

        Parameters
        ----------
        factor : float
            Rate multiplier, > 0.

        Returns
        -------
        Workload
            A copy with rescaled arrival times.

        Raises
        ------
        InvalidInputError
            If ``factor`` is not a positive number.
        """
        factor = check_number("factor", factor, strict_min=True)
        return replace(self, arrival_s=self.arrival_s / factor)

    def with_rate(self, rate_req_s: float) -> Workload:
        """Same requests rescaled to a mean rate of ``rate_req_s`` requests/s.

        Parameters
        ----------
        rate_req_s : float
            Target mean rate, > 0. Requests that all arrive at once are spread evenly instead.

        Returns
        -------
        Workload
            A copy with rescaled arrival times.

        Raises
        ------
        InvalidInputError
            If ``rate_req_s`` is not a positive number.

        Examples
        --------
        >>> Workload.from_arrays([0.0, 1.0, 2.0], [1, 1, 1], [1, 1, 1]).with_rate(4.0).rate_req_s
        4.0
        """
        rate = check_number("rate", rate_req_s, strict_min=True)
        if len(self) < 2 or self.arrival_s[-1] <= 0.0:
            return replace(self, arrival_s=np.arange(len(self), dtype=np.float64) / rate)
        return self.scaled(rate / self.rate_req_s)

    def head(self, limit: int) -> Workload:
        """The first ``limit`` requests.

        Parameters
        ----------
        limit : int
            How many to keep, >= 1 (all of them when there are fewer).

        Returns
        -------
        Workload
            A copy holding the first ``limit`` requests.

        Raises
        ------
        InvalidInputError
            If ``limit`` is not an integer >= 1.
        """
        limit = check_int("limit", limit, minimum=1)
        hashes = None if self.block_hashes is None else self.block_hashes[:limit]
        return replace(
            self,
            arrival_s=self.arrival_s[:limit],
            input_tokens=self.input_tokens[:limit],
            output_tokens=self.output_tokens[:limit],
            block_hashes=hashes,
        )

    @property
    def rate_req_s(self) -> float:
        """Mean arrival rate ((N-1) / span), in requests/s."""
        span = float(self.arrival_s[-1]) if len(self) > 1 else 0.0
        return (len(self) - 1) / span if span > 0 else float("inf")


def load_trace(
    trace: str | Path,
    *,
    limit: int | None = None,
    seed: SeedLike = 0,
    rate: float | None = None,
    arrival: str = "poisson",
    cv: float = 2.0,
    jitter_s: float = 3.0,
    prefix_cache: bool | None = None,
) -> Workload:
    """Load a bundled trace by name, or any file in one of the supported formats by path.

    Parameters
    ----------
    trace : str or Path
        ``azure-conv``, ``azure-code``, ``mooncake-conv``, ``sharegpt``, ``arxiv`` or a path
        (``.csv`` Azure or length-only, ``.jsonl`` Mooncake).
    limit : int, optional
        Keep the first ``limit`` requests (by arrival).
    seed : int, Generator or None
        Seed of the Mooncake bucket jitter and of synthetic arrivals.
    rate : float, optional
        Rescale arrivals to this mean rate (req/s); for length-only traces, the synthetic rate
        (default 5 req/s).
    arrival : {"poisson", "gamma", "onoff"}
        Synthetic process of length-only traces; ``cv`` is the Gamma CV.
    jitter_s : float
        Width of the Mooncake timestamp bucket (uniform jitter in ``[0, jitter_s)``).
    prefix_cache : bool, optional
        Keep block hashes (default: only when the trace has them); ``False`` drops them.

    Returns
    -------
    Workload
        The requests in arrival order, the first arriving at 0 s.

    Raises
    ------
    TraceFormatError
        A bad line: names the file, line number, field and value.
    InvalidInputError
        An unknown trace name or a bad option value.

    Examples
    --------
    >>> wl = load_trace("azure-conv", limit=3)
    >>> len(wl), wl.name, int(wl.input_tokens[0])
    (3, 'azure-conv', 374)
    """
    path, name = _resolve(trace)
    if limit is not None:
        limit = check_int("limit", limit, minimum=1)
    rng = as_generator(seed)
    kind = _detect(path)
    if kind == "azure":
        wl = _load_azure(path, name, limit)
    elif kind == "mooncake":
        wl = _load_mooncake(path, name, limit, rng, check_number("jitter_s", jitter_s))
    else:
        wl = _load_lengths(path, name, limit, rng, rate, arrival, cv)
        rate = None
    if prefix_cache is False and wl.block_hashes is not None:
        wl = replace(wl, block_hashes=None)
    if rate is not None:
        wl = wl.with_rate(rate)
    return wl


def _resolve(trace: str | Path) -> tuple[Path, str]:
    if isinstance(trace, str) and trace in BUNDLED_TRACES:
        return traces_dir() / BUNDLED_TRACES[trace], trace
    path = Path(trace)
    if not path.is_file():
        raise InvalidInputError(
            "trace", str(trace), f"one of {', '.join(BUNDLED_TRACES)} or an existing file path"
        )
    return path, path.stem


def _detect(path: Path) -> str:
    with path.open("r", encoding="utf-8") as handle:
        first = handle.readline().strip()
    if first.startswith("{"):
        return "mooncake"
    header = [h.strip() for h in first.split(",")]
    if header[:3] == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        return "azure"
    if header[:2] == ["num_prefill_tokens", "num_decode_tokens"]:
        return "lengths"
    raise TraceFormatError(
        str(path), 1, "header", first[:60],
        "an Azure CSV header, a length-only CSV header or a Mooncake JSON line",
    )


def _int_field(path: Path, line: int, fieldname: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise TraceFormatError(str(path), line, fieldname, text, f"an integer >= {minimum}") from None
    if value < minimum:
        raise TraceFormatError(str(path), line, fieldname, text, f"an integer >= {minimum}")
    return value


def _load_azure(path: Path, name: str, limit: int | None) -> Workload:
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, row in enumerate(reader, start=2):
            if limit is not None and len(times) >= limit:
                break
            if len(row) < 3:
                raise TraceFormatError(str(path), line, "row", ",".join(row), "3 comma-separated fields")
            try:
                stamp = datetime.fromisoformat(row[0].strip()[:26])
            except ValueError:
                raise TraceFormatError(
                    str(path), line, "TIMESTAMP", row[0], "a timestamp like 2023-11-16 18:17:03.97996"
                ) from None
            times.append(stamp.timestamp())
            inputs.append(_int_field(path, line, "ContextTokens", row[1], 1))
            # A zero-length generation still returns its first token from prefill.
            outputs.append(max(1, _int_field(path, line, "GeneratedTokens", row[2], 0)))
    return Workload.from_arrays(times, inputs, outputs, name=name)


def _load_mooncake(
    path: Path, name: str, limit: int | None, rng: np.random.Generator, jitter_s: float
) -> Workload:
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    hashes: list[list[int]] = []
    with path.open("r", encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if limit is not None and len(times) >= limit:
                break
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(str(path), line, "json", text.strip()[:40], f"a JSON object ({exc.msg})") from None
            values = []
            for key in ("timestamp", "input_length", "output_length"):
                value = record.get(key) if isinstance(record, dict) else None
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise TraceFormatError(str(path), line, key, value, "a non-negative number")
                values.append(value)
            if values[1] < 1:
                raise TraceFormatError(str(path), line, "input_length", values[1], "an integer >= 1")
            ids = record.get("hash_ids", [])
            if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
                raise TraceFormatError(str(path), line, "hash_ids", ids, "a list of integers")
            times.append(values[0] / 1000.0)
            inputs.append(int(values[1]))
            outputs.append(max(1, int(values[2])))
            hashes.append(ids)
    arrival = np.asarray(times, dtype=np.float64) + rng.uniform(0.0, jitter_s, size=len(times))
    return Workload.from_arrays(arrival, inputs, outputs, block_hashes=hashes, name=name)


def _load_lengths(
    path: Path,
    name: str,
    limit: int | None,
    rng: np.random.Generator,
    rate: float | None,
    arrival: str,
    cv: float,
) -> Workload:
    inputs: list[int] = []
    outputs: list[int] = []
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, row in enumerate(reader, start=2):
            if limit is not None and len(inputs) >= limit:
                break
            if len(row) < 2:
                raise TraceFormatError(str(path), line, "row", ",".join(row), "at least 2 comma-separated fields")
            inputs.append(_int_field(path, line, "num_prefill_tokens", row[0], 1))
            outputs.append(max(1, _int_field(path, line, "num_decode_tokens", row[1], 0)))
    times = synthetic_arrivals(
        len(inputs), rate=_DEFAULT_SYNTHETIC_RATE if rate is None else rate,
        process=arrival, cv=cv, seed=rng,
    )
    return Workload.from_arrays(times, inputs, outputs, name=name)
