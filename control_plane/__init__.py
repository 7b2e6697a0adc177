"""The FarmIQ control plane: operator API, model registry, bundles, rollouts, drift."""
