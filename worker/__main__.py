"""`python -m worker`: the container's entry point, the same as `sesguard worker`."""

import sys

from sesguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
