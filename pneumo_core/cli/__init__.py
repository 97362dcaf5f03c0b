"""The ``pneumo`` command line."""
