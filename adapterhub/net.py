"""Network address helpers. Standard library only: the CLI imports this at start-up
(``serve``'s command module), where pydantic and the model libraries must not load."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` never leaves this machine: there a secret in clear over plain http
    is harmless; anywhere else the servers and the http store say so."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
