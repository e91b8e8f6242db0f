"""Identities verified in the SES account, and whether a recipient is one (pure).

SES leaves hard bounces to domains the account has verified out of its bounce rate
(docs/semantics.md, "Bounces to verified identities"). The set holds lower-cased email
address identities (with an "@") and domain identities (without), so one recipient is
two set lookups: the worker's hot path.
"""

from __future__ import annotations

from collections.abc import Iterable

Identities = frozenset[str]
NO_IDENTITIES: Identities = frozenset()


def identity_set(names: Iterable[str]) -> Identities:
    """SES identity names (`example.com`, `ops@example.com`) -> the set `is_verified` reads."""
    return frozenset(n.strip().lower().rstrip(".") for n in names if n and n.strip())


def is_verified(address: object, identities: Identities) -> bool:
    """Whether `address` (bare, as SES writes recipients; any case) is a verified email
    identity or at a verified domain. The domain must match exactly: a subdomain of a
    verified domain is not taken as verified (the docs do not say SES does)."""
    if type(address) is not str or not identities:
        return False
    addr = address.lower()
    return addr in identities or addr[addr.rfind("@") + 1 :] in identities
