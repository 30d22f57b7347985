"""Running the study on clusters: shards from a scheduler's environment (`environment`), the
SLURM launcher that submits the stages as a chain of array jobs (`slurm`)."""
