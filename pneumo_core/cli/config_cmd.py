"""``pneumo config validate|schema|show``."""
from __future__ import annotations

import json


def _validate(args) -> int:
    from pneumo_core.config import load_config

    import sys

    rc = load_config(args.file, args.set or [], load_plugins=args.load_plugins)
    missing = [] if args.no_check_paths else rc.missing_paths()
    if missing:
        for line in missing:
            print(f"{args.file}: {line} (relative paths are read from the config file's folder)", file=sys.stderr)
        print("error: fix the paths, download the data (`pneumo data download kermany`), or pass --no-check-paths "
              "to check the config without its files", file=sys.stderr)
        return 2
    print(f"{args.file}: ok (model {rc.config.model.name}, data {rc.config.data.name}, "
          f"augment {rc.config.augment.name})")
    return 0


def _show(args) -> int:
    import yaml

    from pneumo_core.config import load_config

    rc = load_config(args.file, args.set or [], load_plugins=args.load_plugins)
    shown = {**rc.config.model_dump(mode="json"), **{k: v.model_dump(mode="json") for k, v in rc.sections.items()}}
    print(yaml.safe_dump(shown, sort_keys=False), end="")
    return 0


def _schema(args) -> int:
    from pneumo_core.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def add_set_option(p) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=3")


def add_cli(sub) -> None:
    p = sub.add_parser("config", help="validate a config, show it resolved, print its JSON Schema")
    cs = p.add_subparsers(dest="config_command", required=True)
    v = cs.add_parser("validate", help="check a config and its plugins' params")
    s = cs.add_parser("show", help="print the config with defaults filled in")
    for cmd, handler in ((v, _validate), (s, _show)):
        cmd.add_argument("file")
        add_set_option(cmd)
        cmd.add_argument("--load-plugins", action="store_true",
                         help="also import the .py files and modules the config lists as plugins (their code runs); "
                              "by default only installed plugin packages load")
        cmd.set_defaults(handler=handler)
    v.add_argument("--no-check-paths", action="store_true",
                   help="do not check that the data and other files the config names exist")
    j = cs.add_parser("schema", help="print the JSON Schema of config files")
    j.set_defaults(handler=_schema)
