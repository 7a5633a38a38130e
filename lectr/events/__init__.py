"""Events: the record of each request, and the ring that carries them off the hot path."""
