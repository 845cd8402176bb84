"""Where kernels run: in the calling thread, on threads, or on a Dask cluster.

This package is the only one that imports ``dask.distributed``. Estimators call
the primitives of :mod:`.primitives` with pure kernels (NumPy in, small NumPy
out) on a runner of :mod:`.runners`; :mod:`.cluster` finds or starts the Dask
cluster a runner uses. Workers read their blocks themselves: a task carries
the source description and a row range, not the data -- except for data that
already lives in the driver's memory, which is shipped block by block.
"""

from .cluster import (
    CONNECT_TIMEOUT,
    check_address,
    current_client,
    get_client,
    local_cluster,
    make_security,
)
from .primitives import call, map_blocks, on_block, progress_bar, scan
from .runners import Runner, TaskFailed, resolve_runner

__all__ = [
    "CONNECT_TIMEOUT",
    "Runner",
    "TaskFailed",
    "call",
    "check_address",
    "current_client",
    "get_client",
    "local_cluster",
    "make_security",
    "map_blocks",
    "on_block",
    "progress_bar",
    "resolve_runner",
    "scan",
]
