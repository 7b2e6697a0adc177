"""Inference runtimes behind one small interface (see ``base.Runtime``)."""

from edge_agent.models.runtimes.base import Runtime, RuntimeUnavailable

__all__ = ["Runtime", "RuntimeUnavailable"]
