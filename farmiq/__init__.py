"""FarmIQ Edge: shared, light core (CLI entry, config loading, MQTT topics, bundle format).

Nothing in this package may import cloud-only packages; gateways import it.
"""

__version__ = "0.1.0"
