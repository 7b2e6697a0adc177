"""Simulators and demo tooling: what exercises FarmIQ Edge without real barns.

The production packages (``farmiq/``, ``edge_agent/``, ``firmware_bridge/``,
``provisioning/``, ``control_plane/``) do not import this package (the demo, which still
lives in ``control_plane/demo.py`` and moves here, is the last that does); it is installed
with the ``sim`` extra.
"""
