"""pneumo's built-in plugins. Each registers through the ``pneumo`` entry-point group in
pyproject.toml, exactly like a third-party plugin, and imports only ``pneumo_core``'s public names."""
