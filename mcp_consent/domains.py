"""Registrable domains, from the Public Suffix List, of the hosts a person is shown.

``claude.ai.evil.example.net`` belongs to whoever holds ``example.net``: the consent page
emphasises that part (CD-12, LH-02), because everything to its left is chosen freely by the
domain's holder. The list is the ``publicsuffixlist`` package's bundled copy: no network at
run time.
"""

from __future__ import annotations

import functools
import ipaddress

from publicsuffixlist import PublicSuffixList


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    return PublicSuffixList()


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def registrable_domain(host: str | None) -> str | None:
    """The registrable domain ("eTLD+1") of ``host``, lower case; None when there is none.

    None for IP addresses, single-label names such as ``localhost``, and public suffixes
    themselves (``github.io``): no one domain holder stands behind those.
    """
    host = (host or "").rstrip(".").lower()
    if not host or "." not in host or is_ip_address(host):
        return None
    return _public_suffix_list().privatesuffix(host)
