"""The one request and response schema shared by REST, RunPod and ``pneumo predict --json``."""
from __future__ import annotations

import uuid
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core.errors import PneumoError


class OutOfDistributionError(PneumoError):
    """An image unlike the training X-rays, refused under ``serve.ood_policy: reject``."""

    code = "out_of_distribution"
    http_status = 422


class PredictionRejected(PneumoError):
    """Raised by a ``pneumo_before_predict`` hook to refuse a request; adapters answer 403."""

    code = "rejected"
    http_status = 403


class InputImage(BaseModel):
    """One uploaded image: its file name and raw bytes (JPEG, PNG or DICOM)."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="File name, used in messages.")
    data: bytes = Field(repr=False, exclude=True, description="Raw file bytes.")


class PredictRequest(BaseModel):
    """What every adapter hands the predictor."""

    images: list[InputImage] = Field(min_length=1)
    heatmap: bool = Field(False, description="Also return a Grad-CAM overlay per image.")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str = Field("api", description="Which adapter made the request: rest, runpod, cli, kserve-v2.")
    client: Optional[str] = Field(None, description="Caller identity when known (e.g. API key id).")
    site: Optional[str] = Field(None, description="Use this site's operating point (pneumo calibrate --site).")


class ModelInfo(BaseModel):
    """Identity and operating point of the model that answered."""

    name: str = Field(description="Model name.", examples=["pneumo-resnet18-kermany"])
    version: str = Field(description="Model version (training time stamp).", examples=["20261130-221500"])
    threshold: float = Field(description="The model's own operating threshold on P(positive class).",
                             examples=[0.662])
    classes: list[str] = Field(description="Class names, index = label.", examples=[["NORMAL", "PNEUMONIA"]])
    positive_class: str = Field(description="Class whose probability is reported.", examples=["PNEUMONIA"])
    backend: str = Field(description="The backend that answered: torch-fp32, torch-bf16, torch-cuda-fp32, "
                                     "torch-cuda-fp16, torch-cuda-bf16, onnx, openvino, openvino-bf16 or onnx-int8.",
                         examples=["onnx"])


class BackendCandidate(BaseModel):
    """One backend measured by ``--backend auto``."""

    name: str
    status: Literal["chosen", "accurate", "inaccurate", "unavailable"]
    p50_ms: Optional[float] = Field(None, description="Median latency of one image on this machine, ms.")
    max_prob_change: Optional[float] = Field(None, description="Largest calibrated-probability change "
                                             "against torch fp32 on the reference inputs.")
    note: str = ""


class BackendSelection(BaseModel):
    """How the serving backend was chosen (``--backend auto``) or that it was given."""

    chosen: str
    reason: str
    tolerance: Optional[float] = Field(None, description="Largest probability change accepted.")
    candidates: list[BackendCandidate] = Field(default_factory=list)


class ImageResult(BaseModel):
    """The answer for one image."""

    name: str = Field(description="Uploaded file name.", examples=["chest.jpeg"])
    label: str = Field(description="Predicted class at the operating threshold.", examples=["PNEUMONIA"])
    probability: float = Field(description="Calibrated probability of the positive class.", examples=[0.93])
    probabilities: dict[str, float] = Field(description="Calibrated probability per class.")
    threshold: float = Field(description="Operating threshold used (the site's when a site was named).",
                             examples=[0.662])
    warnings: list[str] = Field(default_factory=list, description="Input-quality and out-of-distribution "
                                "warnings.")
    out_of_distribution: Optional[bool] = Field(None, description="True when the image is unlike the chest "
                                                "X-rays the model was trained on (by the out-of-distribution "
                                                "profile, or a DICOM header naming another modality, body part or "
                                                "a lateral view): its probability is not reliable. None when the "
                                                "model has no profile and the header says nothing against it.")
    ood_score: Optional[float] = Field(None, ge=0, le=100, description="Percentile of the image's distance from the "
                                       "training X-rays among held-out validation X-rays (99.9: more unusual "
                                       "than 99.9% of them); flagged above the profile's percentile (99.5).",
                                       examples=[42.0])
    heatmap_png_base64: Optional[str] = Field(None, description="Grad-CAM overlay as base64 PNG.")


class SiteInfo(BaseModel):
    """The site operating point a response used (absent: the model's own)."""

    name: str = Field(description="Site name.", examples=["st-marys"])
    version: int = Field(description="Profile version: 1 for the first fit, +1 at every refit.")
    threshold: float = Field(description="The site's operating threshold.")
    temperature: float = Field(description="The site's calibration temperature.")
    sha256: str = Field(description="Digest of the site profile.")

    @classmethod
    def of(cls, profile: BaseModel) -> "SiteInfo":
        """The echo of a stored site profile (``artifact.sites.SiteProfile``)."""
        return cls(**profile.model_dump(include=set(cls.model_fields)))


class PredictResponse(BaseModel):
    """The answer to a request: the model and site that answered, one result per image, in order."""

    request_id: str = Field(description="Unique id of this request, for logs.",
                            examples=["9f1c2a7e0b3d4c5e8a6b7c8d9e0f1a2b"])
    model: ModelInfo = Field(description="The model that answered.")
    site: Optional[SiteInfo] = Field(None, description="The site profile used, when the request named one.")
    results: list[ImageResult] = Field(description="One result per image, in the order sent.")
    elapsed_ms: float = Field(description="Server-side time for the request, ms.", examples=[41.2])
