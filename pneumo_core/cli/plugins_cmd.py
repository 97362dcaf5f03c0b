"""``pneumo plugins``: every loaded plugin, where it came from, what it provides."""
from __future__ import annotations

import json


def _run(args) -> int:
    from pneumo_core.config import read_yaml
    from pneumo_core.plugin_manager import get_plugin_manager
    from pathlib import Path

    extra, base = [], None
    if args.config:
        extra = read_yaml(Path(args.config)).get("plugins") or []
        base = Path(args.config).resolve().parent
    infos = get_plugin_manager(extra, base).describe()
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    width = max(len(i.name) for i in infos)
    for i in infos:
        print(f"{i.name:<{width}}  {i.origin}")
        print(f"{'':<{width}}  module {i.module}; provides {', '.join(i.provides) or 'nothing'}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins, their origin and what they provide")
    p.add_argument("--config", help="also load the plugins a config lists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_run)
