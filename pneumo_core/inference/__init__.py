"""Inference: the Predictor, the shared request/response schema, backends, Grad-CAM, export."""
from pneumo_core.inference.predictor import Predictor
from pneumo_core.inference.schema import (IMAGE_ERROR_CODES, ImageResult, InputImage, ModelInfo, PredictionRejected,
                                          PredictRequest, PredictResponse)

__all__ = ["IMAGE_ERROR_CODES", "ImageResult", "InputImage", "ModelInfo", "PredictRequest", "PredictResponse",
           "PredictionRejected", "Predictor"]
