"""shopapi: the shop's REST backend."""
