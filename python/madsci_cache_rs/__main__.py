"""``python -m madsci_cache_rs run -- COMMAND...`` (the console script's twin)."""

import sys

from madsci_cache_rs.cli import main

if __name__ == "__main__":  # stubtest imports every submodule
    sys.exit(main())
