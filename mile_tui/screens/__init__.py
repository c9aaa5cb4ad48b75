"""The console's screens: settings, run, and the small dialogs between them."""
