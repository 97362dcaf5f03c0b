"""``pneumo calibrate ARTIFACT DATA --site NAME``: a site's own threshold and temperature."""
from __future__ import annotations

import json

from pneumo_core.config.schema import BACKENDS


def _run(args) -> int:
    from pneumo_core.evaluation.site_calibration import calibrate_site

    profile = calibrate_site(args.artifact, args.data, args.site, method=args.method,
                             target_sensitivity=args.target_sensitivity, bootstrap=args.bootstrap, backend=args.backend)
    print(json.dumps(profile, indent=2))
    ci = profile["ci95"]
    print(f"site {profile['name']} v{profile['version']}: threshold {profile['threshold']:.4f}, sensitivity "
          f"{profile['apparent']['sensitivity']:.3f} (95% CI {ci['sensitivity'][0]:.3f}-{ci['sensitivity'][1]:.3f}), "
          f"specificity {profile['apparent']['specificity']:.3f} (95% CI {ci['specificity'][0]:.3f}-"
          f"{ci['specificity'][1]:.3f})", flush=True)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("calibrate", help="fit a site's operating point (threshold, temperature) on its own "
                       "labelled images and store it in the artifact")
    p.add_argument("artifact")
    p.add_argument("data", help="a folder with NORMAL/ and PNEUMONIA/ subfolders, or a CSV manifest with "
                   "path and label columns")
    p.add_argument("--site", required=True, help="site name: letters, digits, '.', '_' or '-'")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--target-sensitivity", type=float, help="the highest threshold reaching this sensitivity")
    rule.add_argument("--method", choices=["youden"], default="youden", help="Youden's J (default)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the confidence intervals")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.set_defaults(handler=_run)
