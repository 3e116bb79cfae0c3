"""`python -m personas`: the same as the `personas` command."""

from personas.cli import main

main()
