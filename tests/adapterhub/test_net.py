"""Network address helpers (``adapterhub.net``)."""

from __future__ import annotations

from adapterhub.net import is_loopback


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert is_loopback("127.8.9.10")  # the whole 127/8 block
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    assert not is_loopback("localhost.example.org") and not is_loopback("")
