"""Gateway <-> microcontroller bridge: serial protocol, link, manager, simulator.

Protocol: docs/mcu-protocol.md. Public entry points: ``firmware_bridge.manager.MCUManager``
and the message/result types in ``firmware_bridge.messages``.
"""
