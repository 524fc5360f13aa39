"""The runtime's public surface."""

from __future__ import annotations

import runtime

REQUIRED = {
    "Actor",
    "ActorRef",
    "ChildSpec",
    "Supervisor",
    "DynamicSupervisor",
    "Restart",
    "Strategy",
    "Registry",
    "EventBus",
    "ActorRuntimeError",
    "CallTimeout",
    "ActorDown",
    "MailboxFull",
    "SupervisorGaveUp",
}


def test_required_names_are_exported() -> None:
    """Every name the issue promises is in runtime.__all__ and importable."""
    assert REQUIRED <= set(runtime.__all__)
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name


def test_every_error_is_exported_and_shares_one_base() -> None:
    """All errors of runtime.errors are exported and derive from ActorRuntimeError."""
    import runtime.errors as errors

    error_classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert error_classes <= set(runtime.__all__)
    for name in error_classes:
        assert issubclass(getattr(runtime, name), runtime.ActorRuntimeError)


def test_enums_have_the_otp_members() -> None:
    """Strategy and Restart carry exactly OTP's members."""
    assert {s.value for s in runtime.Strategy} == {"one_for_one", "one_for_all", "rest_for_one"}
    assert {r.value for r in runtime.Restart} == {"permanent", "transient", "temporary"}
