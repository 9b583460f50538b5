"""`python -m dualshift`: the same as the `dualshift` command."""

from dualshift.cli import main

if __name__ == "__main__":
    main()
