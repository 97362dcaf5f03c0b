"""Batch prediction on Slurm: ``pneumo hpc predict`` scores a folder or CSV manifest of images
with an array job, one shard per task, and merges the shards in a job that runs after them.

An output folder ``DIR`` holds everything (see README, "Batch prediction on Slurm")::

    DIR/batch.json                          the plan: artifact, options, the frozen input list
    DIR/predict-array.sbatch, predict-merge.sbatch
    DIR/logs/                               Slurm logs of the tasks and the merge job
    DIR/shards/shard-00003-of-00008.jsonl   one row per image (path + the shared ImageResult)
    DIR/shards/shard-00003-of-00008.done.json  marker: written last, says the shard is complete
    DIR/predictions.csv, predictions.json   the merge

Modules: :mod:`~hpc.batch.inputs` (listing and sharding), :mod:`~hpc.batch.plan` (the plan file
and shard states), :mod:`~hpc.batch.shard` (scoring one shard), :mod:`~hpc.batch.merge`,
:mod:`~hpc.batch.jobs` (sbatch scripts and submission), :mod:`~hpc.batch.cli`.
"""
