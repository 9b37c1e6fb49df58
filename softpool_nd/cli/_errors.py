"""The one error type the commands raise for the user, and lazy optional imports."""

import importlib

__all__ = ["CLIError", "optional_import"]


class CLIError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def optional_import(module, purpose):
    """Import ``module`` or raise CLIError naming the extra that provides it.

    Pillow and tqdm belong to the ``demo`` extra, so ``softpool-nd info`` and
    ``bench`` must work without them; only the commands that need them import them.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CLIError(
            f"{purpose} needs the optional package that provides '{module}' ({exc}); "
            f"install it with: pip install 'softpool_nd[demo]'"
        ) from None
