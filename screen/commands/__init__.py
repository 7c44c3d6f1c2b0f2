"""The Click commands: thin wrappers over plain library functions."""
