"""`.env.example` lists every setting of every service, and nothing that is not one."""

from __future__ import annotations

import importlib
import re

from pydantic import AliasChoices

from libs.runtime import SERVICES
from tests.contracts.render import ROOT

LINE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def listed() -> set[str]:
    return set(LINE.findall((ROOT / ".env.example").read_text()))


def settings_variables() -> set[str]:
    names = set()
    for service in SERVICES:
        settings_cls = importlib.import_module(f"{service.package}.settings").Settings
        for name, field in settings_cls.model_fields.items():
            alias = field.validation_alias
            names |= (
                {str(choice).upper() for choice in alias.choices} if isinstance(alias, AliasChoices) else {name.upper()}
            )
    return names


def test_every_setting_of_every_service_is_listed() -> None:
    assert settings_variables() - listed() == set()


def test_every_listed_variable_is_a_setting() -> None:
    assert listed() - settings_variables() == set()


def test_a_required_setting_is_listed_uncommented_and_empty() -> None:
    text = (ROOT / ".env.example").read_text()
    assert re.search(r"^DATABASE_URL=$", text, re.MULTILINE)
    assert re.search(r"^# LOG_LEVEL=INFO$", text, re.MULTILINE)
