"""``pneumo data download kermany``: the command line of ``pneumo_core.download``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_core.download.kermany import DEFAULT_DEST, URL_ENV, DownloadError, download_kermany, resolve_url


def add_cli(subparsers) -> None:
    """Register ``pneumo data download kermany [--dest DIR] [--url URL] [--sha256 HEX]``.

    Each parser sets ``handler`` (and ``func``): ``args.handler(args)`` returns the exit code.
    """
    data = subparsers.add_parser("data", help="fetch and prepare data sets",
                                 description="Fetch and prepare data sets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    _set_handler(data, lambda args: _print_help(data))

    download = data_sub.add_parser("download", help="download a public data set",
                                   description="Download a public data set.")
    download_sub = download.add_subparsers(dest="dataset", metavar="DATASET")
    _set_handler(download, lambda args: _print_help(download))

    kermany = download_sub.add_parser(
        "kermany",
        help="Kermany pediatric chest X-rays (Mendeley Data, CC BY 4.0, about 1.2 GB)",
        description=(
            "Download ChestXRay2017.zip (resumable), verify it and unpack "
            "DEST/chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg for the imagefolder plugin."
        ),
    )
    kermany.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                         help=f"folder for the archive and chest_xray/ (default: {DEFAULT_DEST})")
    kermany.add_argument("--url", default=None,
                         help=f"archive URL (default: ${URL_ENV} or the Mendeley URL)")
    kermany.add_argument("--sha256", default=None, metavar="HEX",
                         help="expected SHA-256 of the archive; refuse anything else")
    kermany.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the server (default: 60)")
    kermany.add_argument("--no-progress", action="store_true", help="no progress bar or notes")
    _set_handler(kermany, _cmd_download_kermany)


def _set_handler(parser: argparse.ArgumentParser, handler) -> None:
    # ``handler`` is what ``pneumo_core.cli.main`` calls; ``func`` is the argparse idiom
    parser.set_defaults(handler=handler, func=handler)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _cmd_download_kermany(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    try:
        result = download_kermany(args.dest, url=url, expected_sha256=args.sha256,
                                  timeout=args.timeout, progress=not args.no_progress)
    except (DownloadError, OSError) as exc:
        if getattr(args, "verbose", False):
            raise
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the command again to resume the download", file=sys.stderr)
        return 130
    print(f"archive  {result.archive} ({result.size} bytes)")
    print(f"sha256   {result.sha256}")
    print(f"images   {result.root}")
    for split, by_class in result.counts.items():
        cells = "  ".join(f"{cls}={n}" for cls, n in by_class.items())
        print(f"  {split:<5}  {cells}")
    return 0
