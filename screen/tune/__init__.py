"""``screen tune``: choosing the operating point for a target sensitivity."""
