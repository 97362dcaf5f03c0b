"""The Predictor: one model artifact, batched inference, Grad-CAM, hooks. Every adapter uses it."""
from __future__ import annotations

import base64
import copy
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np

from pneumo_core.artifact.ensemble import unwrap_tta
from pneumo_core.artifact.sites import resolve_site
from pneumo_core.artifact.store import ONNX_FILES, Artifact, artifact_plugins, build_model, cam_layers, load_artifact, \
    load_ood
from pneumo_core.data.preprocess import resize_square, to_input
from pneumo_core.inference.calibration import apply_temperature
from pneumo_core.imaging import DecodedImage, ImageLimits, load_image
from pneumo_core.errors import ArtifactError, ModelOutputError
from pneumo_core.inference.backend_choice import TOLERANCE, choose_backend, max_change, warn_if_emulated_bf16
from pneumo_core.inference.backends import BACKENDS, OnnxBackend, OpenVinoBackend, TorchBackend
from pneumo_core.inference.onnx_export import onnx_model_for
from pneumo_core.inference.batcher import MicroBatcher
from pneumo_core.inference.heatmap import GradCamRenderer, overlay_png
from pneumo_core.inference.quality import quality_warnings
from pneumo_core.inference.schema import BackendSelection, ImageResult, ModelInfo, OutOfDistributionError, \
    PredictRequest, PredictResponse, SiteInfo
from pneumo_core.plugin_manager import PneumoPluginManager, get_plugin_manager

log = logging.getLogger("pneumo.predictor")
T = TypeVar("T")


class Predictor:
    """Loads an artifact once; ``predict(request)`` decodes, checks, batches, calibrates and
    thresholds, firing the deployment hooks around it. ``backend`` is one of ``BACKENDS``;
    ``auto`` measures them here (``backend_choice``); ``backend_selection`` records the choice.

    Thread-safe. With ``batching`` (the default) every model operation, loading included, runs on
    one compute thread that merges concurrent requests; ``close()`` stops it."""

    def __init__(self, artifact_dir: str | Path, backend: str = "auto", precision: str = "auto",
                 limits: ImageLimits = ImageLimits(), pm: Optional[PneumoPluginManager] = None,
                 batching: bool = True, max_batch: int = 16, warmup: bool = True, ood_policy: str = "flag") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if ood_policy not in ("flag", "reject"):
            raise ValueError(f"ood_policy must be flag or reject, not {ood_policy!r}")
        self.limits, self.ood_policy = limits, ood_policy
        self._cam: Optional[GradCamRenderer] = None
        self._cam_lock = threading.Lock()
        # With batching, all tensor work, loading included, runs on the batcher's compute thread
        # (see batcher.py for why).
        self._batcher = MicroBatcher(self._forward, max_batch=max_batch) if batching else None
        try:  # a failure anywhere below stops the thread, so no model is left behind in it
            self._on_compute_thread(lambda: self._load(artifact_dir, backend, precision, pm), timeout_s=None)
            meta = self.artifact.meta
            self.prep = meta.preprocessing
            self._cam_layers = cam_layers(self.artifact, self.model, self.pm)
            self.info = ModelInfo(name=meta.name, version=meta.version, threshold=meta.threshold,
                                  classes=meta.classes, positive_class=meta.classes[1], backend=self.backend.name)
            self.ready = False
            if warmup:
                self.warmup()
        except BaseException:
            self.close()
            raise

    def _load(self, artifact_dir: str | Path, backend: str, precision: str,
              pm: Optional[PneumoPluginManager]) -> None:
        self.artifact: Artifact = load_artifact(artifact_dir)
        self.ood = load_ood(self.artifact)
        self.pm = pm or get_plugin_manager(artifact_plugins(self.artifact))
        self.model = build_model(self.artifact, self.pm)
        given = "given explicitly"
        if backend == "auto":
            self.backend, self.backend_selection = choose_backend(self.artifact, self.model, precision=precision)
            return
        if backend == "torch":
            self.backend = TorchBackend(self.model, precision)
            if self.backend.precision == "bf16":
                given = warn_if_emulated_bf16(self.model, self.artifact) or given
        elif backend == "onnx-int8":
            self.backend = OnnxBackend(self.artifact.folder / ONNX_FILES[backend], name=backend)
            drift = max_change(self.backend, self.artifact, self.model)
            if drift > TOLERANCE:  # explicit wins, but not silently
                given = (f"given explicitly; its probabilities move by up to {drift:.4f} from fp32 on the reference "
                         f"inputs (> {TOLERANCE}): it may have been quantised for another CPU")
                log.warning("onnx-int8: %s", given)
        else:
            path = onnx_model_for(self.artifact, self.model)
            self.backend = OnnxBackend(path) if backend == "onnx" else OpenVinoBackend(path)
            drift = max_change(self.backend, self.artifact, self.model)
            if drift > TOLERANCE:  # an export must reproduce the weights it came from
                raise ArtifactError(f"{path}: the ONNX export answers unlike the model (probabilities move by "
                                    f"{drift:.4f}); delete it (and its cache folder) so that it is exported again")
        self.backend_selection = BackendSelection(chosen=self.backend.name, reason=given)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.backend(batch)

    def _on_compute_thread(self, job: Callable[[], T], timeout_s: Optional[float] = -1.0) -> T:
        """Run ``job`` where model work runs (see ``MicroBatcher.call`` for ``timeout_s``)."""
        return self._batcher.call(job, timeout_s) if self._batcher else job()

    # -- lifecycle ------------------------------------------------------------------------
    def warmup(self) -> None:
        """Run one forward pass so the first request is not slow; then mark ready and fire
        ``pneumo_predictor_loaded``."""
        size = self.prep.image_size
        self.logits(np.zeros((1, self.prep.in_chans, size, size), np.float32))
        self.ready = True
        self.pm.hook.pneumo_predictor_loaded(predictor=self)

    def close(self) -> None:
        """Stop the compute thread (requests after this fail); idempotent."""
        self.ready = False
        if self._batcher:
            self._batcher.close()

    def health(self) -> list[dict]:
        """Readiness checks: model warmed up, plus every plugin's ``pneumo_health_checks``."""
        serving = self.ready and (self._batcher is None or self._batcher.alive)
        checks = [{"name": "model", "ok": serving, "detail": f"{self.info.name} {self.info.version}"}]
        for group in self.pm.hook.pneumo_health_checks():
            for hc in group or ():
                try:
                    ok, detail = hc.check()
                except Exception as exc:  # a failing check reports, it does not crash readiness
                    ok, detail = False, f"check raised {exc!r}"
                checks.append({"name": hc.name, "ok": bool(ok), "detail": detail})
        return checks

    # -- numeric core ---------------------------------------------------------------------
    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._batcher.submit(batch) if self._batcher else self.backend(batch)

    def probabilities(self, batch: np.ndarray, temperature: Optional[float] = None) -> np.ndarray:
        """Calibrated P(positive) for a preprocessed (N, C, S, S) batch (with the artifact's
        temperature unless given); ModelOutputError when the model gives a non-finite output (a
        broken model must not produce a label)."""
        probs = apply_temperature(self.logits(batch), temperature or self.artifact.temperature)
        if not np.isfinite(probs).all():
            raise ModelOutputError(f"model {self.artifact.meta.name} gave a non-finite output (NaN or infinity) for "
                                   "this input: the model or its backend is broken; no label is given")
        return probs

    def decode(self, data: bytes, name: str) -> DecodedImage:
        return load_image(data, name=name, limits=self.limits)

    def heatmap_png(self, resized: np.ndarray, x: np.ndarray) -> bytes:
        return overlay_png(resized, self._on_compute_thread(lambda: self._cam_map(x)))

    def _cam_map(self, x: np.ndarray) -> np.ndarray:
        with self._cam_lock:
            if self._cam is None:
                # Grad-CAM keeps hooks on the model it is given: use a private copy so forwards
                # neither feed its buffers nor race with it.
                # (the network inside test-time views: the renderer runs it on each view itself)
                base, views = unwrap_tta(self.model)
                cam_model = copy.deepcopy(base).float().eval()
                names = [next(n for n, m in base.named_modules() if m is layer) for layer in self._cam_layers]
                self._cam = GradCamRenderer(cam_model, [cam_model.get_submodule(n) for n in names], views)
            return self._cam(x)

    # -- requests -------------------------------------------------------------------------
    TENSOR_WARNING = ("preprocessed tensor input: the input-quality and out-of-distribution checks need the "
                      "image and were not run")

    def predict_tensor(self, batch: np.ndarray, request: PredictRequest) -> PredictResponse:
        """Answer a request whose images come already preprocessed: ``batch`` is float32
        ``(N, in_chans, S, S)`` as ``self.prep`` makes it, ``request.images`` names its rows (their
        ``data`` is what the deployment hooks see). No quality or out-of-distribution check can run,
        which each result's warnings say; under ``ood_policy="reject"`` that is an
        OutOfDistributionError. Raises ValueError for a wrong shape or non-finite values."""
        expected = (len(request.images), self.prep.in_chans, self.prep.image_size, self.prep.image_size)
        if batch.shape != expected:
            raise ValueError(f"preprocessed batch has shape {list(batch.shape)}, expected {list(expected)}")
        if not np.isfinite(batch).all():
            raise ValueError("preprocessed batch holds NaN or infinite values")
        t0 = time.perf_counter()
        site = resolve_site(self.artifact.sites, request.site) if request.site else None
        if self.ood_policy == "reject":
            raise OutOfDistributionError("this server refuses images it cannot check for being unlike its training "
                                         "X-rays (serve.ood_policy: reject), and a preprocessed tensor cannot be "
                                         "checked: send the encoded image instead")
        self.pm.hook.pneumo_before_predict(request=request)
        probs = self.probabilities(batch, site.temperature if site else None)
        thr = site.threshold if site else self.info.threshold
        results = [self._result(img.name, float(p), thr, warnings=[self.TENSOR_WARNING])
                   for img, p in zip(request.images, probs)]
        return self._respond(request, site, results, t0)

    def _result(self, name: str, p: float, threshold: float, **fields) -> ImageResult:
        """One image's answer: the label at ``threshold``, both class probabilities, ``fields``."""
        classes = self.info.classes
        return ImageResult(name=name, label=classes[1] if p >= threshold else classes[0], probability=p,
                           probabilities={classes[0]: 1 - p, classes[1]: p}, threshold=threshold, **fields)

    def _respond(self, request: PredictRequest, site, results: list[ImageResult], t0: float) -> PredictResponse:
        """The response for ``results``, after the ``pneumo_after_predict`` hooks have seen it."""
        response = PredictResponse(request_id=request.request_id, model=self.info,
                                   site=SiteInfo.of(site) if site else None, results=results,
                                   elapsed_ms=round((time.perf_counter() - t0) * 1000, 2))
        self.pm.hook.pneumo_after_predict(request=request, result=response)
        return response

    def predict(self, request: PredictRequest) -> PredictResponse:
        """Answer a request. Raises ImageError for unreadable inputs, PredictionRejected when a
        plugin refuses the request, UnknownSiteError for a site the artifact has no profile for, and
        OutOfDistributionError for a foreign image under ``ood_policy="reject"``; each names the cause."""
        t0 = time.perf_counter()
        site = resolve_site(self.artifact.sites, request.site) if request.site else None
        self.pm.hook.pneumo_before_predict(request=request)
        decoded = [self.decode(img.data, img.name) for img in request.images]
        resized = [resize_square(d.pixels, self.prep.image_size) for d in decoded]
        ood = [self.ood.score(r) for r in resized] if self.ood else [None] * len(resized)
        # the DICOM header can say so too (another modality or body part, a lateral view)
        header = [bool(d.not_a_chest_xray) for d in decoded]
        flags = [h or (s is not None and self.ood.flagged(s)) for s, h in zip(ood, header)]
        if self.ood_policy == "reject":
            foreign = [img.name for img, f in zip(request.images, flags) if f]
            if foreign:
                raise OutOfDistributionError(
                    f"{', '.join(foreign)}: not like the chest X-rays this model was trained on (by its DICOM "
                    "header, or more unusual than its validation X-rays), so it is not classified. Send a "
                    "frontal chest radiograph; the server refuses such images (serve.ood_policy: reject).")
        inputs = [to_input(r, self.prep) for r in resized]
        batch = inputs[0][None] if len(inputs) == 1 else np.stack(inputs)  # one image: a view, no copy
        probs = self.probabilities(batch, site.temperature if site else None)
        thr = site.threshold if site else self.info.threshold
        results = []
        for i, (img, d, p, score, flag) in enumerate(zip(request.images, decoded, probs, ood, flags)):
            p = float(p)
            flagged = flag if (score is not None or flag) else None
            warnings = quality_warnings(d, self.prep.image_size)
            if score is not None and self.ood.flagged(score):
                warnings.insert(0, f"out of distribution: unlike the chest X-rays this model was trained on (more "
                                   f"unusual than {score:.1f}% of its validation X-rays); the probability is not "
                                   "reliable")
            results.append(self._result(
                img.name, p, thr, warnings=warnings,
                out_of_distribution=flagged, ood_score=None if score is None else round(score, 1),
                heatmap_png_base64=base64.b64encode(self.heatmap_png(resized[i], batch[i])).decode()
                if request.heatmap else None))
        return self._respond(request, site, results, t0)
