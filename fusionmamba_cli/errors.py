"""The package's error hierarchy. Each also inherits a builtin so callers can catch generically;
the CLI maps them to one red line and an exit code."""

from __future__ import annotations


class FusionMambaError(Exception):
    """Base of every error this package raises on purpose."""


class WeightsNotFoundError(FusionMambaError, FileNotFoundError):
    """A weights name or path that resolves to no file."""


class WeightsFormatError(FusionMambaError, ValueError):
    """A weights file that cannot be read safely or does not fit the architecture."""


class ImageReadError(FusionMambaError, ValueError):
    """An input file that is not a readable image."""


class ImageWriteError(FusionMambaError, OSError):
    """An output that could not be written."""


class PairMismatchError(FusionMambaError, ValueError):
    """Two sources that cannot be fused together (e.g. different sizes without --resize)."""


class DataLayoutError(FusionMambaError, FileNotFoundError):
    """A data root / task split that is missing or not laid out as ROOT/<task>/<split>/<modality>/."""


class BackendUnavailableError(FusionMambaError, RuntimeError):
    """A requested compute backend that cannot run here."""


class WeightsDownloadError(FusionMambaError, ConnectionError):
    """Weights that could not be fetched from the Hub (no network, offline mode, server error)."""
