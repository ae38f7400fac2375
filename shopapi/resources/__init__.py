"""Thin Falcon resources: read the input, call one service, set the answer."""
