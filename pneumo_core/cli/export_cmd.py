"""``pneumo export ARTIFACT --format onnx|onnx-int8|fp16``."""
from __future__ import annotations

from pathlib import Path


def _run(args) -> int:
    from pneumo_core.errors import PneumoError

    if args.format == "onnx":
        from pneumo_core.inference.onnx_export import export_onnx

        print(export_onnx(args.artifact))
        return 0
    if args.format == "onnx-int8":
        from pneumo_core.artifact import load_artifact
        from pneumo_core.inference.onnx_export import export_onnx
        from pneumo_core.inference.onnx_quantize import calibration_batches, quantize_int8

        if not args.calibration:
            raise PneumoError("--format onnx-int8 needs --calibration DIR: a folder of training images")
        prep = load_artifact(args.artifact).meta.preprocessing
        inputs = calibration_batches(Path(args.calibration), prep)
        if not (Path(args.artifact) / "model.onnx").is_file():
            export_onnx(args.artifact)
        out, drift = quantize_int8(args.artifact, inputs, max_drift=args.max_drift)
        print(out)
        print(f"int8 vs fp32 on {len(inputs)} calibration images: largest probability change {drift:.4f}")
        return 0
    from pneumo_core.artifact import repack_artifact

    if not args.out:
        raise PneumoError("--format fp16 writes a new artifact: give its folder with --out")
    print(repack_artifact(args.artifact, args.out))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="export a model artifact: ONNX (fp32 or int8) beside it, or an fp16 copy")
    p.add_argument("artifact")
    p.add_argument("--format", choices=["onnx", "onnx-int8", "fp16"], default="onnx",
                   help="onnx: add model.onnx; onnx-int8: add model.int8.onnx calibrated on --calibration "
                        "images; fp16: copy with float16 weights to --out")
    p.add_argument("--calibration", help="folder of images for int8 calibration (searched recursively)")
    p.add_argument("--out", help="destination folder for --format fp16")
    p.add_argument("--max-drift", type=float, default=0.02,
                   help="onnx-int8: refuse to write the model when a calibrated probability moves more than this "
                        "against fp32 on the calibration images (default 0.02)")
    p.set_defaults(handler=_run)
