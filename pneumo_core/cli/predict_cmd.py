"""``pneumo predict ARTIFACT IMAGE...``: label and probability per image."""
from __future__ import annotations

import sys
from pathlib import Path


def _run(args) -> int:
    from pneumo_core.imaging import ImageError
    from pneumo_core.inference import InputImage, PredictRequest, Predictor

    predictor = Predictor(args.artifact, backend=args.backend, batching=False)
    images = []
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            print(f"error: {name}: file not found", file=sys.stderr)
            return 2
        images.append(InputImage(name=path.name, data=path.read_bytes()))
    try:
        response = predictor.predict(PredictRequest(images=images, heatmap=bool(args.heatmap_dir), source="cli"))
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.heatmap_dir:
        import base64

        out = Path(args.heatmap_dir)
        out.mkdir(parents=True, exist_ok=True)
        for r in response.results:
            (out / f"{Path(r.name).stem}_gradcam.png").write_bytes(base64.b64decode(r.heatmap_png_base64 or ""))
            r.heatmap_png_base64 = None
    if args.json:
        print(response.model_dump_json(indent=2))
        return 0
    width = max(len(r.name) for r in response.results)
    for r in response.results:
        warn = f"  [{'; '.join(r.warnings)}]" if r.warnings else ""
        print(f"{r.name:<{width}}  {r.label:<10} p={r.probability:.4f}{warn}")
    print(f"model {response.model.name} {response.model.version}, threshold {response.model.threshold:.4f}",
          file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a model artifact")
    p.add_argument("artifact", help="model artifact folder, e.g. models/pneumo-resnet18-kermany")
    p.add_argument("images", nargs="+", help="JPEG, PNG or DICOM files")
    p.add_argument("--json", action="store_true", help="print the shared response schema as JSON")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch")
    p.add_argument("--heatmap-dir", help="write Grad-CAM overlays here")
    p.set_defaults(handler=_run)
