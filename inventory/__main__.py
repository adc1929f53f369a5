"""`python -m inventory`: the same as the `inventory` command."""

from inventory.cli import main

main()
