"""``python -m avnbench``: the command line."""

from avnbench.cli import main

main()
