"""Falcon middleware: request id + access log, authentication, rate limits."""
