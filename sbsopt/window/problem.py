"""The two window problems as frozen dataclasses of validated, read-only numpy arrays.

Units are DP ranks; several instances (each a lock-step group of units) may share one window,
so that a router makes one call per window: ``instance[j]`` names the instance of unit ``j``.

Notes
-----
**Prefill.** Request ``i`` has ``n_i`` new tokens, ``p_i`` cached prefix tokens and costs
``c_i = alpha*n_i + beta*n_i*(p_i + n_i/2) + gamma`` microseconds on any unit (the rank-local
linearisation of the cost model, :class:`PrefillCoefficients`). Unit ``j`` already carries
``r_j`` microseconds of committed work (``load_tokens`` treated as one uncached request, or
``load_us`` when given), has ``capacity_tokens[j] - load_tokens[j]`` tokens of chunk room and
``free_kv_blocks[j]`` free KV blocks. The objective, in microseconds, is

    sum over instances g of (base_us + max_{j in g} (r_j + sum_i c_i x_ij))  +  sum_i P_i d_i

with ``P_i = w_i * (defer_factor * c_i + defer_cost_us)`` and the age weight
``w_i = 1 + (now_s - arrival_s_i) / age_scale_s``. With ``defer_factor >= 1`` assigning a
request never costs more than deferring it, so requests are deferred only when capacity (tokens
or KV blocks) forces it, and the oldest are served first. A request whose ``deadline_s`` is at
or before ``now_s + guard_horizon_s`` cannot be deferred. Chunking (third objective): a
request may place its first chunk of ``k < n_i`` tokens (at most the unit's room, KV blocks
pro rata) on a unit with spare room; at most one chunk per unit and per request. The
remainder stays buffered and needs at least one more forward, so it is priced as a deferral
of its own: ``w_i * (defer_factor * c_i' + defer_cost_us * (n_i - k) / n_i)`` with ``c_i'``
the cost of its ``n_i - k`` tokens after ``p_i + k`` cached ones
(``objective.remainder_price_us``). A chunk and its remainder cost one ``gamma`` more than
the whole request, so with ``defer_factor >= 1`` a request that fits whole is split only where
that lowers the objective through the other requests (the step, or room for a deferred
request), never for itself. The greedy sizes a chunk by the room, places it where the price it
removes exceeds the step-time raise it causes, then trims the chunk on the step unit where
the freed room refills (``_kernels.trim_step_chunks``).

**Decode.** Request ``i`` brings ``k_i`` context tokens and needs ``b_i`` KV blocks; unit
``j`` runs ``B_j`` requests (at most ``max_batch_size[j]``) holding ``K_j`` KV tokens. The
objective is the cost-model decode step time per instance, driven by the max batch and the
max KV tokens over the instance's units,

    sum_g (base_us + us_per_request * max_{j in g} B'_j + us_per_kv_token * max_{j in g} K'_j)
      + sum_i P_i d_i,     P_i = us_per_request + us_per_kv_token * k_i + defer_cost_us.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sbsopt._validate import check_array, check_int, check_number
from sbsopt.errors import BackendUnavailableError, InvalidInputError
from sbsopt.kvblocks import KV_BLOCK_TOKENS, request_kv_blocks

__all__ = ["PrefillWindow", "DecodeWindow", "WindowProblem", "prefill_chunk_cost_us"]

#: Free KV blocks assumed when ``free_kv_blocks`` is omitted (no KV limit).
_NO_KV_LIMIT = 2**62
# Deferral weights' defaults (module docstring): choices of ours, the papers are silent.
_AGE_SCALE_S = 1.0
_DEFER_FACTOR = 1.0
_DEFER_COST_US = 1000.0


class _PrefillCoefficients(Protocol):
    base_us: float
    alpha_us_per_token: float
    beta_us_per_pair: float
    gamma_us_per_request: float


class _DecodeCoefficients(Protocol):
    base_us: float
    us_per_request: float
    us_per_kv_token: float


def _default_coefficients(phase: str) -> Any:
    try:
        from sbsopt.costmodel import load_cost_model
    except ImportError as exc:  # the cost model is a hard dependency of coefficients=None
        raise BackendUnavailableError(
            f"coefficients=None needs sbsopt.costmodel.load_cost_model ({exc}); pass coefficients"
        ) from None
    model = load_cost_model()
    return model.prefill_coefficients() if phase == "prefill" else model.decode_coefficients()


def _check_coefficients(coefficients: Any, names: tuple[str, ...]) -> tuple[float, ...]:
    values = []
    for name in names:
        if not hasattr(coefficients, name):
            raise InvalidInputError(f"coefficients.{name}", coefficients, f"an object with {names}")
        values.append(check_number(f"coefficients.{name}", getattr(coefficients, name)))
    return tuple(values)


def _frozen(array: np.ndarray) -> np.ndarray:
    return _read_only(np.array(array, copy=True))


def _read_only(array: np.ndarray) -> np.ndarray:
    # the kernels are compiled for read-only arrays; a writeable one would compile a second variant
    array.setflags(write=False)
    return array


class _ReadOnlyArrays:
    """Keeps a window's arrays read-only through ``pickle`` and ``copy.deepcopy``, which hand
    back writeable copies: the compiled kernels are typed by it, and one writeable array
    makes them compile a second variant, up to seconds inside a timed solve."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, name, value)


def _unit_array(name: str, values: Any, units: int, default: int | None) -> np.ndarray:
    if values is None:
        return np.full(units, default, np.int64)
    array = check_array(name, values, dtype=np.int64)
    if array.shape != (units,):
        raise InvalidInputError(f"len({name})", array.shape[0], f"{units} (one per unit)")
    return array


def _request_array(name: str, values: Any, n: int, dtype: Any = np.int64) -> np.ndarray:
    array = check_array(name, values, dtype=dtype)
    if array.shape != (n,):
        raise InvalidInputError(f"len({name})", array.shape[0], f"{n} (one per request)")
    return array


def _instances(instance: Any, units: int) -> tuple[np.ndarray, int]:
    if instance is None:
        return np.zeros(units, np.int64), 1
    array = _unit_array("instance", instance, units, 0)
    groups = int(array.max(initial=-1)) + 1
    if units and np.bincount(array, minlength=groups).min() == 0:
        raise InvalidInputError("instance", array.tolist(), "instance ids 0..G-1, each used")
    return array, groups


def prefill_chunk_cost_us(
    tokens: np.ndarray | float, cached: np.ndarray | float, coefficients: Any
) -> np.ndarray:
    """Rank-local cost of ``tokens`` new tokens after ``cached`` prefix tokens, microseconds.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.5,
    ...                         gamma_us_per_request=2.0)
    >>> float(prefill_chunk_cost_us(4, 2, c))  # 4 + 0.5*4*(2+2) + 2
    14.0
    """
    n = np.asarray(tokens, np.float64)
    p = np.asarray(cached, np.float64)
    cost = (
        coefficients.alpha_us_per_token * n
        + coefficients.beta_us_per_pair * n * (p + n / 2.0)
        + coefficients.gamma_us_per_request
    )
    return np.where(n > 0, cost, 0.0)


@dataclass(frozen=True)
class PrefillWindow(_ReadOnlyArrays):
    """One prefill window: buffered requests onto the DP units of one or more instances.

    Build it with :meth:`from_arrays`; every array is validated, copied and read-only. The
    formulation is in the module docstring. Derived arrays (``cost_us``, ``residual_us``,
    ``room_tokens``, ``penalty_us``, ``guarded``) are what the solvers read.
    """

    new_tokens: np.ndarray
    cached_tokens: np.ndarray
    arrival_s: np.ndarray
    deadline_s: np.ndarray
    kv_blocks: np.ndarray
    capacity_tokens: np.ndarray
    load_tokens: np.ndarray
    free_kv_blocks: np.ndarray
    instance: np.ndarray
    n_instances: int
    now_s: float
    coefficients: Any
    allow_chunking: bool
    min_chunk_tokens: int
    cost_us: np.ndarray
    residual_us: np.ndarray
    room_tokens: np.ndarray
    weight: np.ndarray
    penalty_us: np.ndarray
    guarded: np.ndarray
    base_us: float
    defer_factor: float = _DEFER_FACTOR

    phase = "prefill"

    @property
    def n_requests(self) -> int:
        """Number of requests N."""
        return int(self.new_tokens.shape[0])

    @property
    def n_units(self) -> int:
        """Number of DP units J."""
        return int(self.capacity_tokens.shape[0])

    @classmethod
    def from_arrays(
        cls,
        new_tokens: Any,
        cached_tokens: Any,
        arrival_s: Any,
        *,
        capacity_tokens: Any,
        load_tokens: Any = None,
        free_kv_blocks: Any = None,
        kv_blocks: Any = None,
        deadline_s: Any = None,
        now_s: float = 0.0,
        coefficients: Any = None,
        allow_chunking: bool = True,
        instance: Any = None,
        load_us: Any = None,
        kv_block_tokens: int = KV_BLOCK_TOKENS,
        min_chunk_tokens: int = 1,
        age_scale_s: float = _AGE_SCALE_S,
        defer_factor: float = _DEFER_FACTOR,
        defer_cost_us: float = _DEFER_COST_US,
        guard_horizon_s: float = 0.0,
    ) -> PrefillWindow:
        """Validate and build a prefill window.

        Parameters
        ----------
        new_tokens, cached_tokens : array_like of int, shape (N,)
            Uncached tokens to prefill and cached prefix tokens (prefix-cache hit) per request.
        arrival_s : array_like of float, shape (N,)
        capacity_tokens : array_like of int, shape (J,)
            Chunk capacity (tokens per forward) per unit.
        load_tokens : array_like of int, shape (J,), optional
            Residual tokens already committed to each unit's next forward (default 0).
        free_kv_blocks : array_like of int, shape (J,), optional
            Free KV blocks per unit (default: no KV limit).
        kv_blocks : array_like of int, shape (N,), optional
            KV blocks a request needs; default ``ceil(new_tokens / kv_block_tokens)`` (cached
            prefix blocks are already resident).
        deadline_s : array_like of float, shape (N,), optional
            TTFT guard; ``inf`` for none. Guarded requests (deadline at or before
            ``now_s + guard_horizon_s``) cannot be deferred.
        coefficients : PrefillCoefficients, optional
            Default: those of ``sbsopt.costmodel.load_cost_model()``.
        instance : array_like of int, shape (J,), optional
            Instance id (0..G-1) of each unit, for multi-instance windows (default one).
        load_us : array_like of float, shape (J,), optional
            Overrides the residual work derived from ``load_tokens``.
        min_chunk_tokens : int
            Smallest chunk worth placing (default 1).
        age_scale_s, defer_factor, defer_cost_us : float
            Deferral weights (module docstring). Choices of ours: the papers are silent.

        Examples
        --------
        >>> from sbsopt.costmodel import PrefillCoefficients
        >>> c = PrefillCoefficients(base_us=10.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
        ...                         gamma_us_per_request=0.0)
        >>> w = PrefillWindow.from_arrays([100, 50], [0, 0], [0.0, 0.0],
        ...                               capacity_tokens=[128, 128], coefficients=c)
        >>> w.n_requests, w.n_units, w.cost_us.tolist()
        (2, 2, [100.0, 50.0])
        """
        new = check_array("new_tokens", new_tokens, dtype=np.int64)
        n = new.shape[0]
        cached = _request_array("cached_tokens", cached_tokens, n)
        arrival = _request_array("arrival_s", arrival_s, n, np.float64)
        capacity = check_array("capacity_tokens", capacity_tokens, dtype=np.int64)
        units = capacity.shape[0]
        if units == 0:
            raise InvalidInputError("len(capacity_tokens)", 0, "at least one unit")
        load = _unit_array("load_tokens", load_tokens, units, 0)
        free = _unit_array("free_kv_blocks", free_kv_blocks, units, _NO_KV_LIMIT)
        block_tokens = check_int("kv_block_tokens", kv_block_tokens, minimum=1)
        if kv_blocks is None:
            blocks = request_kv_blocks(new, block_tokens)
        else:
            blocks = _request_array("kv_blocks", kv_blocks, n)
        if deadline_s is None:
            deadline = np.full(n, np.inf)
        else:
            deadline = np.ascontiguousarray(deadline_s, dtype=np.float64)
            if deadline.shape != (n,) or np.isnan(deadline).any() or (deadline < 0).any():
                raise InvalidInputError("deadline_s", deadline_s, f"{n} numbers >= 0 (inf: none)")
        now = check_number("now_s", now_s)
        inst, groups = _instances(instance, units)
        coeffs = _default_coefficients("prefill") if coefficients is None else coefficients
        _check_coefficients(
            coeffs, ("base_us", "alpha_us_per_token", "beta_us_per_pair", "gamma_us_per_request")
        )
        residual = None
        if load_us is not None:
            residual = check_array("load_us", load_us)
            if residual.shape != (units,):
                raise InvalidInputError("len(load_us)", residual.shape[0], f"{units}")
        return cls._assemble(
            new, cached, arrival, deadline, blocks, capacity, load, free, inst, groups, now_s=now,
            coefficients=coeffs, allow_chunking=bool(allow_chunking), residual_us=residual,
            age_scale_s=check_number("age_scale_s", age_scale_s, strict_min=True),
            defer_factor=check_number("defer_factor", defer_factor),
            defer_cost_us=check_number("defer_cost_us", defer_cost_us),
            guard_horizon_s=check_number("guard_horizon_s", guard_horizon_s),
            min_chunk_tokens=check_int("min_chunk_tokens", min_chunk_tokens, minimum=1), copy=True,
        )

    @classmethod
    def _assemble(cls, new: np.ndarray, cached: np.ndarray, arrival: np.ndarray, deadline: np.ndarray,
                  blocks: np.ndarray, capacity: np.ndarray, load: np.ndarray, free: np.ndarray,
                  inst: np.ndarray, groups: int, *, now_s: float, coefficients: Any,
                  allow_chunking: bool = True, residual_us: np.ndarray | None = None,
                  age_scale_s: float = _AGE_SCALE_S, defer_factor: float = _DEFER_FACTOR,
                  defer_cost_us: float = _DEFER_COST_US, guard_horizon_s: float = 0.0,
                  min_chunk_tokens: int = 1, copy: bool) -> PrefillWindow:
        """The window of already-checked arrays: the derived fields are computed here only.

        :meth:`from_arrays` validates and copies (``copy=True``); the simulator, whose arrays
        are well formed by construction, passes arrays it owns (``copy=False``: made read-only).
        """
        freeze = _frozen if copy else _read_only
        cost = prefill_chunk_cost_us(new, cached, coefficients)
        residual = prefill_chunk_cost_us(load, 0.0, coefficients) if residual_us is None else residual_us
        weight = 1.0 + np.maximum(now_s - arrival, 0.0) / age_scale_s
        penalty = weight * (defer_factor * cost + defer_cost_us)
        guarded = deadline <= now_s + guard_horizon_s
        return cls(
            new_tokens=freeze(new), cached_tokens=freeze(cached), arrival_s=freeze(arrival),
            deadline_s=freeze(deadline), kv_blocks=freeze(blocks),
            capacity_tokens=freeze(capacity), load_tokens=freeze(load),
            free_kv_blocks=freeze(free), instance=freeze(inst), n_instances=groups,
            now_s=float(now_s), coefficients=coefficients, allow_chunking=allow_chunking,
            min_chunk_tokens=min_chunk_tokens, cost_us=freeze(cost), residual_us=freeze(residual),
            room_tokens=freeze(np.maximum(capacity - load, 0)), weight=freeze(weight),
            penalty_us=freeze(penalty), guarded=freeze(guarded),
            base_us=float(coefficients.base_us), defer_factor=defer_factor,
        )


@dataclass(frozen=True)
class DecodeWindow(_ReadOnlyArrays):
    """One decode window: requests finishing prefill onto decode DP units.

    Build it with :meth:`from_arrays`; the formulation is in the module docstring.
    """

    context_tokens: np.ndarray
    kv_blocks: np.ndarray
    batch_size: np.ndarray
    max_batch_size: np.ndarray
    kv_blocks_used: np.ndarray
    free_kv_blocks: np.ndarray
    kv_tokens: np.ndarray
    instance: np.ndarray
    n_instances: int
    coefficients: Any
    iqr_k: float
    penalty_us: np.ndarray
    base_us: float
    us_per_request: float
    us_per_kv_token: float

    phase = "decode"

    @property
    def n_requests(self) -> int:
        """Number of requests N."""
        return int(self.context_tokens.shape[0])

    @property
    def n_units(self) -> int:
        """Number of DP units J."""
        return int(self.batch_size.shape[0])

    @classmethod
    def from_arrays(
        cls,
        context_tokens: Any,
        kv_blocks: Any,
        *,
        batch_size: Any,
        max_batch_size: Any,
        kv_blocks_used: Any,
        free_kv_blocks: Any,
        kv_tokens: Any = None,
        coefficients: Any = None,
        iqr_k: float = 1.5,
        instance: Any = None,
        kv_block_tokens: int = KV_BLOCK_TOKENS,
        defer_cost_us: float = _DEFER_COST_US,
    ) -> DecodeWindow:
        """Validate and build a decode window.

        Parameters
        ----------
        context_tokens, kv_blocks : array_like of int, shape (N,)
        batch_size, max_batch_size, kv_blocks_used, free_kv_blocks : array_like of int, (J,)
        kv_tokens : array_like of int, shape (J,), optional
            KV tokens already read per step on each unit; default
            ``kv_blocks_used * kv_block_tokens``.
        coefficients : DecodeCoefficients, optional
            Default: those of ``sbsopt.costmodel.load_cost_model()``.
        iqr_k : float
            IQR fence multiplier of the IQR-lex greedy (units above ``Q3 + iqr_k*IQR`` of
            the candidates' KV tokens are masked when there are at least 4 candidates).

        Examples
        --------
        >>> from sbsopt.costmodel import DecodeCoefficients
        >>> c = DecodeCoefficients(base_us=100.0, us_per_request=5.0, us_per_kv_token=0.01)
        >>> d = DecodeWindow.from_arrays([640], [10], batch_size=[0, 1], max_batch_size=[4, 4],
        ...                              kv_blocks_used=[0, 3], free_kv_blocks=[50, 50],
        ...                              coefficients=c)
        >>> d.kv_tokens.tolist()
        [0, 192]
        """
        context = check_array("context_tokens", context_tokens, dtype=np.int64)
        n = context.shape[0]
        blocks = _request_array("kv_blocks", kv_blocks, n)
        batch = check_array("batch_size", batch_size, dtype=np.int64)
        units = batch.shape[0]
        if units == 0:
            raise InvalidInputError("len(batch_size)", 0, "at least one unit")
        max_batch = _unit_array("max_batch_size", max_batch_size, units, None)
        over = np.flatnonzero(batch > max_batch)
        if over.size:
            j = int(over[0])
            raise InvalidInputError(f"batch_size[{j}]", int(batch[j]),
                                    f"at most max_batch_size[{j}] = {int(max_batch[j])}")
        used = _unit_array("kv_blocks_used", kv_blocks_used, units, None)
        free = _unit_array("free_kv_blocks", free_kv_blocks, units, None)
        block_tokens = check_int("kv_block_tokens", kv_block_tokens, minimum=1)
        kv = used * block_tokens if kv_tokens is None else _unit_array("kv_tokens", kv_tokens, units, 0)
        inst, groups = _instances(instance, units)
        coeffs = _default_coefficients("decode") if coefficients is None else coefficients
        _check_coefficients(
            coeffs, ("base_us", "us_per_request", "us_per_kv_token")
        )
        return cls._assemble(
            context, blocks, batch, max_batch, used, free, kv, inst, groups, coefficients=coeffs,
            iqr_k=check_number("iqr_k", iqr_k), defer_cost_us=check_number("defer_cost_us", defer_cost_us),
            copy=True,
        )

    @classmethod
    def _assemble(cls, context: np.ndarray, blocks: np.ndarray, batch: np.ndarray, max_batch: np.ndarray,
                  used: np.ndarray, free: np.ndarray, kv: np.ndarray, inst: np.ndarray, groups: int, *,
                  coefficients: Any, iqr_k: float, defer_cost_us: float = _DEFER_COST_US,
                  copy: bool) -> DecodeWindow:
        """The window of already-checked arrays (see :meth:`PrefillWindow._assemble`)."""
        freeze = _frozen if copy else _read_only
        penalty = _decode_penalty_us(context, coefficients, defer_cost_us)
        return cls(
            context_tokens=freeze(context), kv_blocks=freeze(blocks), batch_size=freeze(batch),
            max_batch_size=freeze(max_batch), kv_blocks_used=freeze(used),
            free_kv_blocks=freeze(free), kv_tokens=freeze(kv), instance=freeze(inst),
            n_instances=groups, coefficients=coefficients, iqr_k=float(iqr_k),
            penalty_us=freeze(penalty), base_us=float(coefficients.base_us),
            us_per_request=float(coefficients.us_per_request), us_per_kv_token=float(coefficients.us_per_kv_token),
        )


def _decode_penalty_us(context: np.ndarray, coefficients: Any, defer_cost_us: float = _DEFER_COST_US) -> np.ndarray:
    """A decode window's deferral penalty per request: its own step cost plus ``defer_cost_us``."""
    per_token = float(coefficients.us_per_kv_token)
    return float(coefficients.us_per_request) + per_token * context.astype(np.float64) + defer_cost_us


WindowProblem = PrefillWindow | DecodeWindow
