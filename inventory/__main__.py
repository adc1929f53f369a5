"""`python -m inventory`: the same as the `inventory` command."""

from inventory.entry import main

main()
