"""Faults of the worker, not of the input: a library or model that will not load, the operating system,
memory. A step that meets one is retried and then fails its batch (``repair`` re-runs it once the worker
is fixed); its objects are never quarantined for it."""


class EnvironmentFault(Exception):
    """The worker cannot run a step here (e.g. its model will not load)."""


ENVIRONMENT_ERRORS = (EnvironmentFault, ImportError, OSError, MemoryError)


def load_model(what, loader, *args):
    """``loader(*args)``; any failure is the worker's (missing or corrupt file, library mismatch)."""
    try:
        return loader(*args)
    except Exception as exc:
        raise EnvironmentFault(f"{what} could not be loaded: {type(exc).__name__}: {exc}") from exc
