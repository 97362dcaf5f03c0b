"""WSGI entry point for gunicorn: ``adapters.flask_app.wsgi:app`` (model loaded once per worker)."""
from adapters.flask_app.app import create_app

app = create_app()
