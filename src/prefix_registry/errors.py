"""The error hierarchy: problems caused by what a user asked for, or by the state of the registry, as opposed to bugs.

The CLI and the HTTP server print these as one line (no traceback) and the CLI exits with status 2; anything else
is a bug and keeps its traceback. Each message names what was expected and what was received.
"""

import re

# `scheme://user:password@`: the password part of any URL written in a message.
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^\s/]*@")


def mask_credentials(text: str) -> str:
    """`text` with the password of every URL in it replaced by *** (`http://ann:***@host`), so that an error
    message, a log line or an HTTP answer never carries a secret that was part of a configured URL."""
    return _URL_CREDENTIALS.sub(r"\g<head>:***@", text)


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type name when the message is empty): the cause in a one-line error.

    For a SQLAlchemy error this is the database driver's own message (`orig`), without SQLAlchemy's statement dump
    and "Background on this error at ..." link. A URL's password in it is masked.
    """
    text = str(getattr(error, "orig", None) or error).strip()
    return mask_credentials(text.splitlines()[0]) if text else type(error).__name__


class PrefixRegistryError(Exception):
    """A problem with the user's input or the registry's state, explained in one line."""


# --- Training: data, settings, base models, adapter files --------------------------------------------------------
class DataError(PrefixRegistryError):
    """Labelled data that cannot be trained or evaluated on: missing file, wrong columns, empty texts..."""


class ConfigError(PrefixRegistryError):
    """A training or monitoring setting outside what is accepted."""


class BaseModelError(PrefixRegistryError):
    """A base model that cannot be found or loaded."""


class AdapterError(PrefixRegistryError):
    """Adapter files that are missing, corrupted, or do not fit the base model they are loaded on."""


# --- Registry: tasks, versions, aliases ----------------------------------------------------------------------------
class RegistryError(PrefixRegistryError):
    """The registry cannot do what was asked in its current state."""


class InvalidTaskName(RegistryError):
    pass


class InvalidRegime(RegistryError):
    """A regime name that is not valid, or not a regime of the task."""


class TaskNotFound(RegistryError):
    pass


class VersionNotFound(RegistryError):
    pass


class AliasNotSet(RegistryError):
    pass


class NoRollbackHistory(RegistryError):
    pass


class BelowBaseline(RegistryError):
    """A version that does not beat the linear probe of its own split, promoted without --force."""


class VersionNotVerified(RegistryError):
    """A version whose adapter does not match what was registered, or does not load, named as an alias target."""


class RegistryUnavailable(RegistryError):
    """The MLflow tracking / registry server cannot be reached."""
