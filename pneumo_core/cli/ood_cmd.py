"""``pneumo ood fit ARTIFACT --data CONFIG``: add an out-of-distribution profile to an artifact."""
from __future__ import annotations

import json

from pneumo_core.cli.config_cmd import add_set_option


def _fit(args) -> int:
    from pneumo_core.evaluation.ood_fit import fit_artifact

    summary = fit_artifact(args.artifact, args.data, args.set or [])
    print(json.dumps(summary, indent=2))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("ood", help="out-of-distribution profile of a model artifact")
    actions = p.add_subparsers(dest="ood_action", required=True)
    fit = actions.add_parser("fit", help="fit the profile on the training images of the config the artifact was "
                             "trained with (its quantiles on the validation images) and add it to the artifact")
    fit.add_argument("artifact")
    fit.add_argument("--data", required=True, help="the config the artifact was trained with")
    add_set_option(fit)
    fit.set_defaults(handler=_fit)
