"""Command-line tools around the models (weight import)."""
