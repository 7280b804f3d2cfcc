"""The version of jaxdl (one place: `jaxdl.__version__` and the checkpoints' manifests read it)."""

__version__ = "0.1.0"
