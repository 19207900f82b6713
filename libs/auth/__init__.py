"""Authentication shared by every API: argon2 passwords, TOTP used once and sealed at rest, short-lived JWTs
verified strictly."""

from libs.auth.guards import (
    admin_principal,
    bearer_principal,
    provider_principal,
    require_admin,
    require_provider_or_admin,
    user_principal,
)
from libs.auth.passwords import hash_password, verify_nobody, verify_password
from libs.auth.principals import Principal, Role
from libs.auth.tokens import ALGORITHM, AuthSettingsMixin, Tokens
from libs.auth.totp import (
    TotpSecrets,
    TotpSettingsMixin,
    UnreadableSecret,
    is_sealed,
    matching_totp_step,
    new_totp_secret,
    totp_uri,
)

__all__ = [
    "ALGORITHM",
    "AuthSettingsMixin",
    "Principal",
    "Role",
    "Tokens",
    "TotpSecrets",
    "TotpSettingsMixin",
    "UnreadableSecret",
    "admin_principal",
    "bearer_principal",
    "hash_password",
    "is_sealed",
    "matching_totp_step",
    "new_totp_secret",
    "provider_principal",
    "require_admin",
    "require_provider_or_admin",
    "totp_uri",
    "user_principal",
    "verify_nobody",
    "verify_password",
]
