"""The checkpoint errors: one base class, and what went wrong (damage, or a different model)."""


class CheckpointError(ValueError):
    """Base class of checkpoint errors."""


class CheckpointCorruptedError(CheckpointError):
    """The checkpoint's files do not match its manifest, or the manifest is malformed."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's entries do not fit the template (a different architecture)."""
