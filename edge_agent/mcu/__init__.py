"""The gateway's side of its microcontrollers: readings in, actuator commands out."""
