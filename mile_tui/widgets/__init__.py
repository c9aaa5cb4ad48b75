"""The run screen's panels and the state they show."""
