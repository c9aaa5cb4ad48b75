"""What is read out of runs and checkpoints: studies, comparisons, evaluation, inspection."""
