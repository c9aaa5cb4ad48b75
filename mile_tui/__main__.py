"""`python -m mile_tui` (and `torchrun -m mile_tui`) runs the command line."""

from mile_tui.cli import main

main()
