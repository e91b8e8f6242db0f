"""sesguard: per-partner sending-reputation guard for Amazon SES."""

__version__ = "0.1.0"
