"""Registry errors: each names the task, version or alias concerned and what was expected."""

from training.errors import PrefixRegistryError


class RegistryError(PrefixRegistryError):
    """The registry cannot do what was asked in its current state."""


class InvalidTaskName(RegistryError):
    pass


class TaskNotFound(RegistryError):
    pass


class VersionNotFound(RegistryError):
    pass


class AliasNotSet(RegistryError):
    pass


class NoRollbackHistory(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    """The MLflow tracking / registry server cannot be reached."""
