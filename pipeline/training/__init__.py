"""Training of each classifier and its model card (run by the train_* management commands)."""
