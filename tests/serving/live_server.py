"""The tests' gunicorn server: the Flask adapter's own background launcher."""
from adapters.flask_app.background import BackgroundServer as LiveServer

__all__ = ["LiveServer"]
