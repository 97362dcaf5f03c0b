"""Slurm job templates and the `pneumo hpc` command."""
