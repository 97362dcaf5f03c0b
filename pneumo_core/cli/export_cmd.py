"""``pneumo export ARTIFACT --format onnx|fp16``."""
from __future__ import annotations


def _run(args) -> int:
    if args.format == "onnx":
        from pneumo_core.inference.onnx_export import export_onnx

        print(export_onnx(args.artifact))
        return 0
    from pneumo_core.artifact import repack_artifact
    from pneumo_core.errors import PneumoError

    if not args.out:
        raise PneumoError("--format fp16 writes a new artifact: give its folder with --out")
    print(repack_artifact(args.artifact, args.out))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="export a model artifact: ONNX beside it, or an fp16 copy")
    p.add_argument("artifact")
    p.add_argument("--format", choices=["onnx", "fp16"], default="onnx",
                   help="onnx: add model.onnx to the artifact; fp16: copy with float16 weights to --out")
    p.add_argument("--out", help="destination folder for --format fp16")
    p.set_defaults(handler=_run)
