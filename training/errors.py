"""Errors caused by what a user asked for, as opposed to bugs.

The CLI and the HTTP server print these as one line (no traceback); anything else is a bug and keeps its traceback.
"""


class PrefixRegistryError(Exception):
    """A problem with the user's input or the registry's state, explained in one line."""


class DataError(PrefixRegistryError):
    """Labelled data that cannot be trained or evaluated on: missing file, wrong columns, empty texts..."""


class ConfigError(PrefixRegistryError):
    """A training or monitoring setting outside what is accepted."""


class BaseModelError(PrefixRegistryError):
    """A base model that cannot be found or loaded."""


class AdapterError(PrefixRegistryError):
    """Adapter files that are missing, corrupted, or do not fit the base model they are loaded on."""
