"""The package's error hierarchy. Each also inherits a builtin so callers can catch generically;
the CLI maps them to one red line and an exit code. Also `is_out_of_memory`, the one test for
device out-of-memory errors."""

from __future__ import annotations


class FusionMambaError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidRequestError(FusionMambaError):
    """What was asked for cannot be done as asked (an unknown weights name, a missing data root, a run
    folder in the wrong state): the caller's mistake, not a failure of the work. The CLI exits 2."""


class WeightsNotFoundError(InvalidRequestError, FileNotFoundError):
    """A weights name or path that resolves to no file."""


class WeightsFormatError(FusionMambaError, ValueError):
    """A weights file that cannot be read safely or does not fit the architecture."""


class ImageReadError(FusionMambaError, ValueError):
    """An input file that is not a readable image."""


class ImageWriteError(FusionMambaError, OSError):
    """An output that could not be written."""


class PairMismatchError(FusionMambaError, ValueError):
    """Two sources that cannot be fused together (e.g. different sizes without --resize)."""


class DataLayoutError(InvalidRequestError, FileNotFoundError):
    """A data root / task split that is missing or not laid out as ROOT/<task>/<split>/<modality>/."""


class BackendUnavailableError(FusionMambaError, RuntimeError):
    """A requested compute backend that cannot run here."""


class WeightsDownloadError(FusionMambaError, ConnectionError):
    """Weights that could not be fetched from the Hub (no network, offline mode, server error)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error: torch's OutOfMemoryError, or a RuntimeError saying so
    (other backends and older paths raise plain RuntimeErrors). Such errors are never swallowed by the
    fall-backs that retry without CUDA graphs or torch.compile."""
    import torch  # here, not at module level: this module is imported before anything heavy

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
