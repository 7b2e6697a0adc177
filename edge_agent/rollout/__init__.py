"""The agent's part in fleet rollouts: desired state, transfers, probation, shadow, health."""
