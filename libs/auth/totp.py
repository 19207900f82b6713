"""Time-based one-time passwords (RFC 6238), each code accepted once."""

from __future__ import annotations

import time

import pyotp


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str = "fmhl-ops") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def matching_totp_step(secret: str, code: str, *, now: float | None = None, window: int = 1) -> int | None:
    """The time step the code belongs to (within ±window steps), or None.

    pyotp's verify() would accept the same code twice; the caller stores the step and accepts only a later one.
    """
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time() if now is None else now
    current = int(moment) // totp.interval
    for step in range(current - window, current + window + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None
