"""gunicorn entry point: `gunicorn -c gunicorn.conf.py shopapi.asgi:app` (asgi worker class).

Imported by each worker after fork, so every worker opens its own pool.
"""

from shopapi.app import create_app

app = create_app()
