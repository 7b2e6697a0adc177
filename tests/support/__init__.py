"""Helpers shared by the test suites: real processes for the broker, control plane, agent."""
