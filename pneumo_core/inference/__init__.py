"""Inference: the Predictor, the shared request/response schema, backends, Grad-CAM, export."""
from pneumo_core.inference.predictor import Predictor
from pneumo_core.inference.schema import (ImageResult, InputImage, ModelInfo, OutOfDistributionError,
                                          PredictionRejected, PredictRequest, PredictResponse)

__all__ = ["ImageResult", "InputImage", "ModelInfo", "OutOfDistributionError", "PredictRequest", "PredictResponse",
           "PredictionRejected", "Predictor"]
