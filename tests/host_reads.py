"""Count the reads of tensor values back to the host (``.item()``, ``bool(t)``, ``float(t)``),
with where they happen: on a GPU each one waits for the device to finish its queued work.

A dispatch mode sees every such read as ``aten::_local_scalar_dense``, on the CPU as well,
so the tests find them without a GPU (``torch.cuda.set_sync_debug_mode`` finds them only on
one); ``nonzero`` (and boolean-mask indexing, which calls it) counts too, since the size of
its output must come back to the host. Reads of a whole tensor (``.tolist()``, ``.cpu()``)
are copies on a GPU and nothing on the CPU, so they are not seen here.
"""

from __future__ import annotations

import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_READS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), bool(t), float(t)
    torch.ops.aten.nonzero.default,  # its output's size is data: the host must wait for it
}


class HostReads(TorchDispatchMode):
    """``with HostReads() as reads: ...``; ``reads.count`` and ``reads.where()`` after.
    ``sizes=False`` counts the scalar reads only (not ``nonzero``)."""

    def __init__(self, sizes: bool = True) -> None:
        super().__init__()
        self.reads = _READS if sizes else {torch.ops.aten._local_scalar_dense.default}
        self.sites: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.reads:
            frames = [
                f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                for f in traceback.extract_stack()[:-1]
                if "site-packages" not in f.filename and "host_reads" not in f.filename
            ]
            self.sites[" <- ".join(reversed(frames[-3:]))] += 1
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def where(self) -> str:
        """The reads by call site, most frequent first (for assertion messages)."""
        return "\n".join(f"{n} x {site}" for site, n in self.sites.most_common())
