"""The experiment config: one pydantic model, loaded from YAML (see ``config.loader``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


# Inference backends (``pneumo_core.inference.backends`` says what each is): the one list that the
# config, the CLIs and both adapters accept.
Backend = Literal["auto", "torch", "onnx", "openvino", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginRef(_Section):
    """A section that names a plugin and passes it ``params`` (validated by that plugin)."""

    name: str = Field(description="Name of the registered plugin record.")
    params: dict[str, Any] = Field(default_factory=dict, description="Plugin parameters.")


class ModelSection(PluginRef):
    name: str = Field("resnet18", description="Model plugin, e.g. resnet18 or timm.")
    in_chans: int = Field(1, ge=1, le=4, description="Input channels (1 for grayscale).")


class DataSection(PluginRef):
    name: str = Field(description="Dataset plugin: imagefolder, csv, medmnist, synthetic...")
    image_size: int = Field(224, ge=16, le=2048, description="Square side images are resized to.")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of train patients held out "
                                "for validation when the dataset has no usable val split.")
    min_val_images: int = Field(100, ge=0, description="A provided val split smaller than this is "
                                "replaced by a patient-grouped split of train.")
    temporal_fraction: float = Field(0.0, ge=0, lt=0.5, description="Share of the patients of each "
                                     "acquisition series and label, earliest first, held out as the "
                                     "`temporal` validation split (0: none). Needs a dataset that "
                                     "knows the acquisition order (imagefolder, csv).")
    split_seed: Optional[int] = Field(None, description="Seed of the random `val` split (default: "
                                      "train.seed). Runs meant for one ensemble share it and vary train.seed.")
    select_on: Literal["val", "temporal"] = Field("val", description="Validation split that chooses the "
                                                  "best epoch, the temperature and the threshold.")
    cache: bool = Field(True, description="Decode and resize each image once, keep it in memory.")
    num_workers: int = Field(0, ge=0, description="DataLoader workers for augmentation.")


    @model_validator(mode="after")
    def _temporal_needed(self) -> "DataSection":
        if self.select_on == "temporal" and self.temporal_fraction == 0:
            raise ValueError("select_on: temporal needs temporal_fraction > 0 (e.g. 0.1)")
        return self


class AugmentSection(PluginRef):
    name: str = Field("albumentations", description="Augmentation plugin.")


class ThresholdSection(_Section):
    method: Literal["youden", "sensitivity", "fixed"] = "youden"
    target_sensitivity: float = Field(0.95, gt=0, lt=1)
    value: float = Field(0.5, gt=0, lt=1, description="Used when method is fixed.")


class DistillSection(_Section):
    """Train against a teacher artifact's calibrated probabilities as well as the labels."""

    teacher: Path = Field(description="A trained artifact (one network or an ensemble) fitted on the same "
                          "splits; relative to the config's folder (from --set: to the working folder).")
    weight: float = Field(0.5, gt=0, le=1, description="Share of the loss from the teacher's probabilities "
                          "on each augmented batch; the rest comes from the labels (1: the teacher alone).")


class TrainSection(_Section):
    epochs: int = Field(10, ge=1, le=100_000, description="Number of epochs.")
    batch_size: int = Field(32, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=100)
    weight_decay: float = Field(1e-4, ge=0, le=100)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "onecycle", "constant"] = "onecycle"
    warmup_epochs: float = Field(1.0, ge=0, le=100_000)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CPUs with AMX/AVX512-BF16 and on CUDA with bf16.")
    channels_last: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    class_weighting: Literal["balanced", "none"] = "balanced"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    ema_decay: Optional[float] = Field(None, ge=0.5, lt=1, description="Keep an exponential moving "
                                       "average of the weights (timm ModelEmaV3, with warm-up); "
                                       "validation, selection and the artifact use it. e.g. 0.998.")
    distill: Optional[DistillSection] = Field(None, description="Knowledge distillation, e.g. of an "
                                              "ensemble into one network (docs/training.md).")
    grad_clip: Optional[float] = Field(1.0, gt=0, le=1e6)
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    threshold: ThresholdSection = Field(default_factory=ThresholdSection)
    calibrate: bool = Field(True, description="Fit temperature scaling on validation data.")
    bootstrap: int = Field(1000, ge=0, le=1_000_000, description="Bootstrap resamples for the AUC confidence interval.")
    seed: int = 0
    deterministic: bool = False
    max_train_batches: Optional[int] = Field(None, ge=1, description="Cap batches per epoch (smoke tests).")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: all cores).")


class ServeSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    threads: int = Field(4, ge=1)
    backend: Backend = Field("auto", description="auto measures the others at load and keeps the fastest "
                             "whose probabilities match torch fp32.")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    ood_policy: Literal["flag", "reject"] = Field("flag", description="An image unlike the training X-rays: "
                                                  "flag it in the result, or reject the request (422).")
    max_upload_mb: float = Field(20, gt=0, description="Largest image file.")
    max_request_mb: float = Field(50, gt=0, description="Largest request body (all files together).")
    max_pixels: int = Field(40_000_000, gt=0)
    max_batch: int = Field(16, ge=1, description="Most images in one request.")
    api_key_env: str = Field("PNEUMO_API_KEYS", description="Env var with comma-separated API keys; "
                             "auth is on when it is set and non-empty.")


class ExperimentConfig(_Section):
    """A whole experiment: which plugins, how to train and serve it. Other top-level sections
    (``hpc``...) belong to the packages that register them (``pneumo_config_sections``); they
    are kept here as given and validated by ``config.loader.resolve``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field("experiment", description="Run and artifact name.")
    plugins: list[str] = Field(default_factory=list, description="Extra plugin modules or .py files.")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    augment: AugmentSection = Field(default_factory=AugmentSection)
    loggers: list[PluginRef] = Field(default_factory=lambda: [PluginRef(name="csv")], description="Experiment "
                                     "trackers fed each epoch's metrics on rank 0: csv (metrics.csv in the run "
                                     "folder), tensorboard, mlflow, or a plugin's.")
    train: TrainSection = Field(default_factory=TrainSection)
    serve: ServeSection = Field(default_factory=ServeSection)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ \t\n"):
            raise ValueError("must be a non-empty name without slashes or spaces")
        return v
