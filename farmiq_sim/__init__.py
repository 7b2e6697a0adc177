"""Simulation and demonstration tools: the one-machine demo, an embedded MQTT broker.

Nothing in the production packages (edge_agent, control_plane, provisioning, firmware_bridge)
imports this package.
"""
