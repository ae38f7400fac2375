"""Security tests: one module per OWASP API Security Top 10 (2023) risk that applies.

API7 (server-side request forgery) does not: the API never fetches a URL (`image_url` is only
stored and echoed). API10 (unsafe consumption of APIs) does not: it consumes no third-party API.
"""
