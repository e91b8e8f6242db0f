"""`python -m sesguard.cli`: the same as the installed `sesguard` command."""

import sys

from sesguard.cli import main

if __name__ == "__main__":
    sys.exit(main())
