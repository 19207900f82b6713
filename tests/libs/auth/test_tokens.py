"""Bearer tokens: verified strictly, and a token verified once is remembered only until it expires."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException

from libs.auth import Principal, Tokens
from libs.auth.tokens import REMEMBERED_TOKENS

ADMIN = Principal(subject=str(uuid.uuid4()), role="admin", provider_id=None, amr=("pwd", "otp"))


def expiry_of(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


def tokens(secret: str = "k" * 40, ttl_s: int = 900) -> Tokens:
    return Tokens(secret, "fmhl-ops", "fmhl-api", ttl_s)


def test_a_token_verified_again_gives_the_same_principal() -> None:
    verifier = tokens()
    token = verifier.issue(ADMIN)
    assert verifier.verify(token) == ADMIN
    assert verifier.verify(token) == ADMIN


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = tokens(ttl_s=60)
    # Issued so that it expires at the next whole second or the one after.
    token = verifier.issue(ADMIN, now=time.time() - 59)
    assert verifier.verify(token) == ADMIN
    deadline = time.monotonic() + 5
    while time.time() < expiry_of(token) and time.monotonic() < deadline:
        assert verifier.verify(token) == ADMIN
        time.sleep(0.05)
    with pytest.raises(NotAuthorizedException, match="expired"):
        verifier.verify(token)


def test_a_refused_token_is_refused_every_time() -> None:
    token = tokens(secret="o" * 40).issue(ADMIN)
    verifier = tokens()
    for _ in range(2):
        with pytest.raises(NotAuthorizedException):
            verifier.verify(token)


def test_the_remembered_tokens_stay_bounded() -> None:
    verifier = tokens()
    issued = [verifier.issue(ADMIN) for _ in range(REMEMBERED_TOKENS + 10)]
    for token in issued:
        assert verifier.verify(token) == ADMIN
    assert len(verifier._verified) <= REMEMBERED_TOKENS
