"""Installed models: runtimes, the model set, the on-disk store, the installer, trust."""
