"""The FarmIQ gateway daemon. Light by rule: no cloud-side packages are imported here."""

from farmiq import __version__

__all__ = ["__version__"]
