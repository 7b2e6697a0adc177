"""Gateway <-> microcontroller bridge: serial protocol, link, manager, model budget check.

The MCU simulator lives in ``farmiq_sim.mcu`` (not part of a gateway install); the C
reference firmware in ``mcu_reference/``.

Protocol: docs/mcu-protocol.md. Public entry points: ``firmware_bridge.manager.MCUManager``
and the message/result types in ``firmware_bridge.messages``.
"""
