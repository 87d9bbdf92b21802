"""BLF gateway: busy lamp fields from TAPI, Asterisk and SIP lines to CTI clients."""

__version__ = "0.1.0"
__all__ = ["__version__"]
