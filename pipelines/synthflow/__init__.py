"""Synthflow's `GET /v2/numbers`: the client that reads listings, the simulator that serves them."""
