"""The closed learning loop: labelled examples from the fleet, a per-model training
entrypoint run as an MLflow run, a candidate registered with lineage, and a
champion/challenger comparison that promotes only a candidate that wins by a margin."""
