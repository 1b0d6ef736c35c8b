r"""The data behind a potential: rows of any structure, from tensors or streamed from a DataLoader.

A :class:`DataSource` holds the training set :math:`D_n` of an empirical potential
:math:`L_n(w) = \frac1n \sum_{k=1}^n \ell(w; z_k)` and hands out the batches the samplers evaluate:

* **full batch** (:meth:`DataSource.full`): all rows, shared by every chain;
* **per-chain minibatches** (:meth:`DataSource.take`): chain :math:`k` sees rows ``idx[k]`` (drawn by the
  chain's own random stream, with replacement), stacked on a leading chain axis;
* **streamed minibatches** (:meth:`DataSource.next_batch`, DataLoader sources): the loader's next batch,
  shared by every chain; the loader is iterated as it is (its own shuffling and batch size) and restarted
  when exhausted; the dataset is never materialised;
* **chunks** (:meth:`DataSource.chunks`): the whole data in pieces, for exact full-data means such as
  :math:`L_n(w^*)` (one pass over a loader).

A row structure is any nesting of tuples, lists and dicts of tensors that share the leading sample axis
(``(X, Y)``, ``(X, Y, weights)``, ``{"input_ids": ...}``); batches keep that structure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["Batch", "DataSource"]


class Batch(NamedTuple):
    """A batch handed to a potential: the rows (any structure) and whether they carry a chain axis.

    ``per_chain=False``: every tensor has shape ``(m, ...)`` and all chains see the same rows.
    ``per_chain=True``: every tensor has shape ``(C, m, ...)``, chain ``k`` sees ``data[k]``.
    """

    data: Any
    per_chain: bool = False


def _leaves(data: Any) -> list[Any]:
    return pytree.tree_leaves(data)


def _check_rows(data: Any, what: str) -> int:
    leaves = _leaves(data)
    if not leaves:
        raise ValueError(f"{what} holds no tensors")
    bad = [type(t).__name__ for t in leaves if not isinstance(t, Tensor)]
    if bad:
        raise ValueError(f"{what} must hold only tensors (in tuples, lists or dicts); found {', '.join(bad)}")
    n = leaves[0].shape[0] if leaves[0].ndim > 0 else 0
    if n < 1 or any(t.ndim == 0 or t.shape[0] != n for t in leaves):
        raise ValueError(
            f"all tensors of {what} must share a non-empty leading (sample) axis; got shapes "
            + ", ".join(str(tuple(t.shape)) for t in leaves)
        )
    return int(n)


def _to(data: Any, device: torch.device | None, dtype: torch.dtype | None) -> Any:
    def move(t: Tensor) -> Tensor:
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t if device is None else t.to(device)

    return pytree.tree_map(move, data)


class DataSource:
    """Rows of training data for a potential (see the module docstring).

    Parameters
    ----------
    data : Tensor, tuple/list/dict of tensors, TensorDataset or DataLoader
        The training rows. A ``TensorDataset`` is taken as the tuple of its tensors. A ``DataLoader`` is
        streamed (its batches are used as minibatches; never concatenated).
    device : torch.device, optional
        Where batches go (default: where they are).
    dtype : torch.dtype, optional
        Floating tensors are cast to it (integer tensors such as labels are kept).
    num_rows : int, optional
        Number of rows of a DataLoader whose dataset has no ``len``.

    Examples
    --------
    >>> X = torch.randn(10, 3); Y = torch.randn(10, 1)
    >>> src = DataSource((X, Y))
    >>> src.num_rows, src.streaming
    (10, False)
    >>> b = src.take(torch.tensor([[0, 1], [2, 3]]))
    >>> b.per_chain, tuple(b.data[0].shape)
    (True, (2, 2, 3))
    """

    def __init__(
        self,
        data: Any,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        num_rows: int | None = None,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self._loader: DataLoader | None = None
        self._iter: Iterator[Any] | None = None
        if isinstance(data, TensorDataset):
            data = tuple(data.tensors)
        if isinstance(data, DataLoader):
            self._loader = data
            size = num_rows
            if size is None:
                try:
                    size = len(data.dataset)  # type: ignore[arg-type]
                except TypeError:
                    size = None
            if size is None:
                raise ValueError(
                    "the DataLoader's dataset has no length: pass n= (the number of training samples)"
                )
            self.num_rows = int(size)
            self._rows = None
            self.structure = "loader"
        else:
            if isinstance(data, Tensor):
                data = (data,)
            elif isinstance(data, list):
                data = tuple(data)
            elif isinstance(data, Mapping) and not isinstance(data, dict):
                data = dict(data)  # e.g. a tokenizer's BatchEncoding (a UserDict)
            if not isinstance(data, tuple | dict):
                raise ValueError(
                    "data must be a Tensor (n, ...), a tuple/list/dict of tensors sharing the leading axis n "
                    f"(e.g. (X, Y)), a TensorDataset or a DataLoader; got {type(data).__name__}"
                    + (
                        "; wrap a Dataset in a DataLoader (DataLoader(ds, batch_size=...)), and pass "
                        "evaluate=fn(model, batch) -> loss when its items are not (x, y) tuples"
                        if isinstance(data, Dataset)
                        else ""
                    )
                )
            self.num_rows = _check_rows(data, "data")
            self._rows = _to(data, device, dtype)
            self.structure = "tensors"

    @property
    def streaming(self) -> bool:
        """True for a DataLoader source (minibatches come from the loader, shared by all chains)."""
        return self._loader is not None

    @property
    def rows(self) -> Any:
        """All rows (tensor sources only)."""
        if self._rows is None:
            raise ValueError("a DataLoader source is streamed; it has no in-memory rows")
        return self._rows

    def full(self) -> Batch:
        """Every row, shared by all chains (tensor sources only)."""
        return Batch(self.rows, per_chain=False)

    def take(self, idx: Tensor) -> Batch:
        """Rows ``idx`` of shape ``(C, m)``: a per-chain batch with a leading chain axis."""
        return Batch(pytree.tree_map(lambda t: t[idx], self.rows), per_chain=True)

    def next_batch(self) -> Batch:
        """The loader's next batch (restarting it when exhausted), shared by all chains."""
        if self._loader is None:
            raise ValueError("next_batch needs a DataLoader source")
        for attempt in range(2):
            if self._iter is None:
                self._iter = iter(self._loader)
            try:
                raw = next(self._iter)
            except StopIteration:
                self._iter = None
                if attempt:
                    raise ValueError("the DataLoader yields no batches") from None
                continue
            return Batch(self._prepare(raw), per_chain=False)
        raise AssertionError("unreachable")

    def _prepare(self, raw: Any) -> Any:
        if isinstance(raw, list):
            raw = tuple(raw)
        if isinstance(raw, Mapping) and not isinstance(raw, dict):
            raw = dict(raw)  # e.g. a HuggingFace collator's BatchEncoding
        if isinstance(raw, Tensor):
            raw = (raw,)
        _check_rows(raw, "a DataLoader batch")
        return _to(raw, self.device, self.dtype)

    def chunks(self, size: int) -> Iterator[tuple[Any, int]]:
        """The whole data as ``(rows, num_rows)`` pieces of at most ``size`` rows (one loader pass)."""
        if self._loader is not None:
            for raw in self._loader:
                rows = self._prepare(raw)
                yield rows, _leaves(rows)[0].shape[0]
            return
        n = self.num_rows
        for start in range(0, n, size):
            piece = pytree.tree_map(lambda t, s=start: t[s : s + size], self.rows)
            yield piece, min(size, n - start)

    def head(self, m: int) -> Any:
        """The first ``m`` rows (a probe batch); for a loader, the first rows of its first batch."""
        if self._loader is not None:
            rows = next(self.chunks(m))[0]
        else:
            rows = self.rows
        return pytree.tree_map(lambda t: t[:m], rows)

    def describe(self) -> dict[str, Any]:
        """Shapes and kind, for the record of a result."""
        if self._loader is not None:
            return {"kind": "DataLoader", "num_rows": self.num_rows,
                    "batch_size": getattr(self._loader, "batch_size", None)}
        return {"kind": "tensors", "num_rows": self.num_rows,
                "shapes": pytree.tree_map(lambda t: list(t.shape), self.rows)}

