"""Devices and meshes, below everything that trains on them (no jaxdl imports but these).

* `jaxdl.mesh.sharding`: the one-axis ``"data"`` mesh (`data_mesh`), where batches and
  replicated trees live on it (`shard_batch`, `replicate`), each process's rows
  (`process_rows`).
* `jaxdl.mesh.cpu`: several CPU devices in one process: XLA:CPU's thread pools sized so that
  their all-reduces cannot deadlock (`prepare_cpu_devices`, `check_cpu_mesh`).
* `jaxdl.mesh.watchdog`: a mesh step whose collective stalls ends the process with a message
  naming the step (``JAXDL_STALL_TIMEOUT``), never a silent hang.

`jaxdl.distributed` (joining a multi-process run) and `jaxdl.training.parallel` (the mesh
steps) build on this package.
"""

from jaxdl.mesh.sharding import DATA_AXIS, data_mesh, process_rows

__all__ = ["DATA_AXIS", "data_mesh", "process_rows"]
