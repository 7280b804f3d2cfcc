"""The names of the on-disk format: what the manifest calls it, its version, the names inside a checkpoint."""

FORMAT = "jaxdl.checkpoint"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
#: The orbax checkpoint's directory inside a checkpoint.
ARRAYS_DIR = "arrays"
#: The pattern of the ``uuid4().hex`` in the names of hidden data, link, head and temporary entries.
UUID_HEX = "[0-9a-f]{32}"
