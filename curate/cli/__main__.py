"""`python -m curate.cli`: the command line."""

from curate.cli import main

main()
