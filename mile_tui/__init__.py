"""mile_tui: the command line and the Textual console of mile-tui."""
