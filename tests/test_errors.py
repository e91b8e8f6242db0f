"""One error tree (sesguard.errors): every exception class of sesguard, sender and worker is
a Refused or a Failed, and the CLI turns any of them into its exit code in one place."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import sender
import sesguard
import worker
from sesguard.errors import Failed, Refused, SesguardError
from sesguard.runtime.delivery import Aborted
from tests.conftest import cli

# Control flow, not errors (each says why in its docstring); nothing else may stay outside.
OUTSIDE_THE_TREE = {Aborted}


def all_modules() -> list[ModuleType]:
    found = []
    for package in (sesguard, sender, worker):
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith("__main__"):  # running it is its import
                found.append(importlib.import_module(info.name))
    return found


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined at the top level of one of our modules."""
    return sorted(
        {
            obj
            for module in all_modules()
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, BaseException)
            and obj.__module__ == module.__name__
        },
        key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )


TREE = (SesguardError, Refused, Failed)
CLASSES = [cls for cls in exception_classes() if cls not in TREE]


def test_the_walk_finds_the_classes() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"JobError", "StoreError", "SettingsError", "NotAnEvent", "ObjectTooLarge"} <= names
    assert {"ApplyError", "PartnerNotFound", "TenantsUnsupported", "Aborted"} <= names
    assert len(CLASSES) >= 19  # NoSuchPartner merged into PartnerNotFound


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_exception_is_refused_or_failed(cls: type[BaseException]) -> None:
    if cls in OUTSIDE_THE_TREE:
        assert not issubclass(cls, SesguardError)
        assert cls.__doc__ and "Control flow" in cls.__doc__
        return
    assert issubclass(cls, Refused) != issubclass(cls, Failed), f"{cls} must be one of the two"


def test_the_two_branches_are_the_two_exit_codes() -> None:
    assert (Refused.exit_code, Failed.exit_code) == (2, 1)
    assert SesguardError.__subclasses__() == [Refused, Failed]


def _made(cls: type[BaseException]) -> BaseException:
    """An instance with the message "boom", whatever the class's constructor asks for."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, "boom")
    return exc


@pytest.mark.parametrize(
    "cls",
    [cls for cls in CLASSES if cls not in OUTSIDE_THE_TREE],
    ids=lambda cls: f"{cls.__module__}.{cls.__name__}",
)
def test_the_cli_exits_2_for_a_refusal_and_1_for_a_failure_from_anywhere(
    cls: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sesguard.cli import events

    def raising(_args: object) -> int:
        raise _made(cls)

    monkeypatch.setattr(events, "cmd_job_schema", raising)  # registered when main parses
    r = cli("job-schema")
    assert r.code == (2 if issubclass(cls, Refused) else 1)
    assert r.err == "sesguard: boom\n"  # one line, the message as it is


def test_anything_else_is_an_unexpected_error_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from sesguard.cli import events

    def raising(_args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(events, "cmd_job_schema", raising)
    r = cli("job-schema")
    assert r.code == 1 and "unexpected error: ZeroDivisionError('a bug')" in r.err
