"""TCP transport: a threaded node that carries wire messages between peers."""
