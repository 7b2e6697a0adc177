"""A FarmIQ MCU in software on a pseudo-terminal (``farmiq mcu simulate``).

``MCUSimulator`` speaks the serial protocol (docs/mcu-protocol.md) like the firmware does and
runs ``mcu-tflite`` models with the TFLite Micro interpreter (the ``tflite-micro`` package,
in the ``sim`` extra; imported only when a model arrives). Not part of a gateway install.
"""
