"""Every error adapterhub raises on purpose.

Each library error also inherits the built-in type a caller would naturally catch
(``KeyError`` for "not found", ``ValueError`` for bad input, ``ImportError`` for plugin
loading, ``OSError`` for storage), so code that does not know adapterhub still handles
them sensibly. The CLI prints any :class:`AdapterhubError` as one line, no traceback.
"""

from __future__ import annotations


class AdapterhubError(Exception):
    """Base of all adapterhub errors; ``str(err)`` is a complete one-line message."""

    def __str__(self) -> str:  # KeyError would otherwise repr() its message
        return " ".join(str(a) for a in self.args) if self.args else self.__class__.__name__


# --- plugins and catalog -------------------------------------------------------------
class PluginLoadError(AdapterhubError, ImportError):
    """A plugin failed to import, has a bad hook, or raised while registering."""


class DuplicateNameError(AdapterhubError, ValueError):
    """Two plugins registered the same name; the message names both plugins."""


class UnknownNameError(AdapterhubError, KeyError):
    """No method/evaluator/task/store/base model of that name is in the catalog."""


# --- configuration and input -----------------------------------------------------------
class ConfigError(AdapterhubError, ValueError):
    """A method config, ``--set key=value`` or option is invalid."""


class DataError(AdapterhubError, ValueError):
    """Training/eval data is malformed (the message names file and line)."""


class MissingPackageError(AdapterhubError, ImportError):
    """An optional package that ships data or a model is not installed."""


# --- artifacts ---------------------------------------------------------------------------
class ArtifactError(AdapterhubError, ValueError):
    """An adapter artifact (manifest or weights) is malformed; names the file."""


class UnsafeFileError(ArtifactError):
    """A weights file is not a well-formed safetensors file (pickle, LFS pointer, ...)."""


class ManifestError(ArtifactError):
    """manifest.json is invalid: unknown fields, unknown format_version, bad types."""


class IntegrityError(ArtifactError):
    """Size or sha256 of a stored file does not match what its manifest records."""


class IncompatibleAdapterError(AdapterhubError, ValueError):
    """Adapter does not fit this base/method: fingerprint, keys, shapes or dtypes."""


# --- registry ------------------------------------------------------------------------------
class AdapterNotFoundError(AdapterhubError, KeyError):
    """No adapter (name, version or tag) matches the reference."""


class InvalidNameError(AdapterhubError, ValueError):
    """An adapter name or reference breaks the naming rule or escapes the store."""


class VersionExistsError(AdapterhubError, FileExistsError):
    """The version is already published; versions are immutable."""


class StoreError(AdapterhubError, OSError):
    """A store operation failed (I/O, disk full, remote down after retries)."""


class RemoteUnavailableError(StoreError):
    """A remote store could not be reached after bounded retries."""


class AuthenticationError(AdapterhubError, PermissionError):
    """No valid credentials: a token is missing, malformed or unknown (HTTP 401)."""


class AccessDeniedError(AdapterhubError, PermissionError):
    """Valid credentials that do not grant this: wrong scope or adapter pattern (HTTP 403)."""


class SignatureError(AdapterhubError, ValueError):
    """A signature is malformed or does not match its version, or a version required to be
    signed has no signature that verifies with a key trusted for its name (docs/signing.md)."""


# --- base models and runtime -------------------------------------------------------------------
class BaseModelError(AdapterhubError, ValueError):
    """The base model spec cannot be resolved or loaded."""


class AdapterUnloadedError(AdapterhubError, KeyError):
    """A request named an adapter that is not (or no longer) loaded in the host."""


class TrainingError(AdapterhubError, RuntimeError):
    """Training could not proceed (e.g. NaN loss, no trainable parameters)."""


class EvaluationError(AdapterhubError, RuntimeError):
    """An evaluator or metric could not run (e.g. metric not available offline)."""


# --- serving ---------------------------------------------------------------------------
class QueueFullError(AdapterhubError, RuntimeError):
    """The engine's admission queue is full; the request was refused, not queued."""


class ContextLengthError(AdapterhubError, ValueError):
    """A prompt (plus ``max_tokens``) does not fit the base's context window."""


class EngineClosedError(AdapterhubError, RuntimeError):
    """The serving engine has been closed; it takes no more requests."""



class ReplicaUnavailableError(AdapterhubError, RuntimeError):
    """The engine replica serving a request went away (``serve --ray``) after it had
    streamed output, or no replica answered; the request was not answered elsewhere."""
