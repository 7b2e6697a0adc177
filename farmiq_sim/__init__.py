"""Simulators and demo tooling: what exercises FarmIQ Edge without real barns.

Nothing in ``farmiq/``, ``edge_agent/``, ``firmware_bridge/``, ``provisioning/`` or
``control_plane/`` imports this package; it is installed with the ``sim`` extra.
"""
