"""The SES mailbox simulator's addresses: an SES fact both services and the tools need.

SES leaves mail to the simulator out of the account's reputation rates, so the worker
keeps it apart (docs/semantics.md); the local simulator (sesguard.local.simulator) plays
what SES would publish for these addresses.
"""

from __future__ import annotations

SIMULATOR_DOMAIN = "simulator.amazonses.com"

_SIMULATOR_SUFFIX = "@" + SIMULATOR_DOMAIN
_TAIL = len(_SIMULATOR_SUFFIX) + 2  # room for a closing ">" and a space


def is_simulator_address(value: object) -> bool:
    """`bounce+x@simulator.amazonses.com`, any case, bare or as `Name <...>`: mail SES
    leaves out of the account's rates (the worker's hot path, so no full parse)."""
    if type(value) is not str:
        return False
    return value[-_TAIL:].rstrip("> ").lower().endswith(_SIMULATOR_SUFFIX)
