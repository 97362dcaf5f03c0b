"""Flask-RESTX REST API and web page over the core Predictor."""
from adapters.flask_app.app import create_app

__all__ = ["create_app"]
