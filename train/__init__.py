"""Training and evaluating each ensemble member."""
