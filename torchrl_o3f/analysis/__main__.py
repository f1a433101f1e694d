"""``python -m torchrl_o3f.analysis``: see :func:`torchrl_o3f.analysis.main`."""

import sys

from torchrl_o3f.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
