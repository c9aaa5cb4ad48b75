"""The sub-commands of `mile-tui`, one module each; `mile_tui.cli` registers them."""
