"""RunPod serverless worker over the core Predictor: see handler.py and README.md."""
