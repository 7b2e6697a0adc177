"""Fleet drift detection and the retraining loop (control-plane side). See docs/drift.md."""
