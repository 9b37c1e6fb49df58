"""``python -m softpool_nd`` and the ``softpool-nd`` console script.

The commands live in :mod:`softpool_nd.cli`; this module only names the entry
point that ``setup.cfg`` declares.
"""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
