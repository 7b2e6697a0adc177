"""Simulators and demo tooling: what exercises FarmIQ Edge without real barns (MCUs on a
pty, fleets of gateways, the synthetic barn model, a CPU tritonserver, the demo).

The production packages (``farmiq/``, ``edge_agent/``, ``firmware_bridge/``,
``provisioning/``, ``control_plane/``) do not import this package; it is installed with the
``sim`` extra and is never needed by a gateway.
"""
