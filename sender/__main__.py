"""`python -m sender`: the container's entry point, the same as `sesguard sender`."""

import sys

from sesguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["sender", *sys.argv[1:]]))
