"""`python -m parallelsync` behaves exactly like the `parallelsync` console script."""

import sys

from parallelsync.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
