"""pneumo-tinycnn: an example third-party pneumo plugin (model ``tinycnn``).

pneumo finds it through the entry point in ``pyproject.toml`` (group ``pneumo``), which names
:mod:`pneumo_tinycnn.plugin`. Nothing here imports pneumo's internals: only ``pneumo_core``'s
public names (``ModelSpec``, ``hookimpl``).
"""

__version__ = "0.1.0"
