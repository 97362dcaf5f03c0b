"""Inference: the Predictor, the shared request/response schema, backends, Grad-CAM, export."""
from pneumo_core.inference.predictor import Predictor
from pneumo_core.inference.schema import (ImageResult, InputImage, ModelInfo, PredictionRejected,
                                          PredictRequest, PredictResponse)

__all__ = ["ImageResult", "InputImage", "ModelInfo", "PredictRequest", "PredictResponse",
           "PredictionRejected", "Predictor"]
