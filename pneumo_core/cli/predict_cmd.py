"""``pneumo predict ARTIFACT IMAGE|FOLDER...``: label and probability per image.

Files are classified in batches of ``--batch-size``, so a folder of thousands of images runs in
bounded memory. A file that cannot be read, decoded or is refused by a plugin is reported on
stderr and skipped; the others are still classified, and the exit status is then 2.
"""
from __future__ import annotations

import base64
import sys
import time
import uuid
from pathlib import Path

from pneumo_core.cli.argtypes import positive_int
from pneumo_core.config.schema import BACKENDS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}


def expand_inputs(names: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given, folders as their image files (recursive, sorted): (paths, errors).
    Each path is reported as it is spelled here, so results map back to files unambiguously."""
    paths, errors = [], []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            paths += found
            if not found:
                errors.append(f"{name}: no .jpg, .jpeg, .png or .dcm files in this folder")
        elif path.is_file():
            paths.append(path)
        else:
            errors.append(f"{name}: file not found")
    return paths, errors


def _classify(predictor, paths: list[Path], heatmap: bool, errors: list[str], site: str | None = None) -> list:
    """Results for ``paths`` as one request; on a bad file, one request per file to isolate it."""
    from pneumo_core.imaging import ImageError
    from pneumo_core.inference import InputImage, OutOfDistributionError, PredictionRejected, PredictRequest

    def request(group: list[Path]):
        images = [InputImage(name=str(p), data=p.read_bytes()) for p in group]
        return predictor.predict(PredictRequest(images=images, heatmap=heatmap, source="cli", site=site)).results

    try:
        return request(paths)
    except (ImageError, PredictionRejected, OutOfDistributionError, OSError) as exc:
        if len(paths) == 1:
            errors.append(f"{paths[0]}: {_reason(exc)}")
            return []
    return [r for p in paths for r in _classify(predictor, [p], heatmap, errors, site)]


def _reason(exc: Exception) -> str:
    """The cause without the file name (the caller prints it) or the REST upload hint."""
    from pneumo_core.imaging import ImageError

    if isinstance(exc, ImageError):
        return f"{exc.prefix}{exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _heatmap_path(folder: Path, image: Path, written: set[str]) -> Path:
    """``<stem>_gradcam.png``, or ``<stem>_2_gradcam.png``, ... when that name is already taken in
    this run (a/x.png and b/x.jpeg)."""
    name, n = f"{image.stem}_gradcam.png", 1
    while name in written:
        n += 1
        name = f"{image.stem}_{n}_gradcam.png"
    written.add(name)
    return folder / name


def _run(args) -> int:
    from tqdm.auto import tqdm

    from pneumo_core.artifact.sites import resolve_site
    from pneumo_core.inference import PredictResponse, Predictor
    from pneumo_core.inference.schema import SiteInfo

    paths, errors = expand_inputs(args.images)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not paths:
        return 2
    heatmap_dir = Path(args.heatmap_dir) if args.heatmap_dir else None
    if heatmap_dir:
        try:
            heatmap_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --heatmap-dir {heatmap_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    predictor = Predictor(args.artifact, backend=args.backend, batching=False, ood_policy=args.ood_policy)
    site = resolve_site(predictor.artifact.sites, args.site) if args.site else None  # unknown: fail before any work
    written: set[str] = set()
    t0 = time.perf_counter()
    width = max(len(str(p)) for p in paths)
    results, failed = [], []
    with tqdm(total=len(paths), unit="img", desc="predict", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            for r in _classify(predictor, chunk, heatmap_dir is not None, failed, args.site):
                if heatmap_dir:
                    target = _heatmap_path(heatmap_dir, Path(r.name), written)
                    try:
                        target.write_bytes(base64.b64decode(r.heatmap_png_base64))
                    except OSError as exc:
                        bar.write(f"error: {target}: {exc.strerror or exc}", file=sys.stderr)
                        return 2
                    r.heatmap_png_base64 = None
                results.append(r)
                if not args.json:
                    warn = f"  [{'; '.join(r.warnings)}]" if r.warnings else ""
                    bar.write(f"{r.name:<{width}}  {r.label:<10} p={r.probability:.4f}{warn}", file=sys.stdout)
            for message in failed:
                bar.write(f"error: {message}", file=sys.stderr)
            errors += failed
            failed.clear()
            bar.update(len(chunk))
    info = predictor.info
    if args.json:  # all batches as one response of the shared schema
        response = PredictResponse(request_id=uuid.uuid4().hex, model=info, results=results,
                                   site=SiteInfo.of(site) if site else None,
                                   elapsed_ms=round((time.perf_counter() - t0) * 1000, 2))
        print(response.model_dump_json(indent=2))
    print(f"model {info.name} {info.version} on {info.backend} ({predictor.backend_selection.reason}), "
          + (f"site {site.name} v{site.version}, threshold {site.threshold:.4f}" if site else
             f"threshold {info.threshold:.4f}") + f": {len(results)} classified"
          + (f", {len(errors)} failed" if errors else ""), file=sys.stderr)
    return 2 if errors else 0


def add_cli(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a model artifact")
    p.add_argument("artifact", help="model artifact folder, e.g. models/pneumo-resnet18-kermany")
    p.add_argument("images", nargs="+", help="JPEG, PNG or DICOM files, or folders of them")
    p.add_argument("--json", action="store_true", help="print the shared response schema as JSON")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): the fastest backend that matches torch fp32 on this machine")
    p.add_argument("--heatmap-dir", help="write Grad-CAM overlays here")
    p.add_argument("--site", help="use this site's operating point (fitted by `pneumo calibrate --site`)")
    p.add_argument("--ood-policy", choices=["flag", "reject"], default="flag",
                   help="an image unlike the training X-rays: flag it (default) or skip it as an error")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.set_defaults(handler=_run)
