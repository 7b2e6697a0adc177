"""Answering inference requests: the router, its policy, executor and targets."""
