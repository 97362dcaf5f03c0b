"""Flask-RESTX REST API and web page over the core Predictor (``adapters.flask_app.app.create_app``).

Deliberately imports nothing: gunicorn's master imports ``gunicorn_conf`` from this package, and
prometheus-client fixes its single- or multi-process mode when first imported, which must happen
in the workers, after ``gunicorn_conf`` has set PROMETHEUS_MULTIPROC_DIR.
"""
