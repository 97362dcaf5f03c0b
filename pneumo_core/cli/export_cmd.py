"""``pneumo export ARTIFACT --format onnx``."""
from __future__ import annotations


def _run(args) -> int:
    from pneumo_core.inference.onnx_export import export_onnx

    print(export_onnx(args.artifact))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="export a model artifact (ONNX)")
    p.add_argument("artifact")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.set_defaults(handler=_run)
