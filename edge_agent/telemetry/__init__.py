"""What the agent measures: drift statistics, concept drift, Prometheus metrics, resources."""
