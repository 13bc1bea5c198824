"""People behind keys (R10, R11): person ids and a console credential acting for a named person."""

from __future__ import annotations

import pytest

from shared.acting import Acting, Refusal, acting, derive_person, person_id

ROLES = ("staff", "counsellor")
OFFICES = ("kushiro-gyosei", "kohoku-hellowork")


def refusal(headers: dict[str, str], **kw: object) -> tuple[int, str]:
    with pytest.raises(Refusal) as refused:
        acting(headers.items(), **{"delegates": True, "roles": ROLES, "offices": OFFICES, **kw})  # type: ignore[arg-type]
    return refused.value.status_code, refused.value.reason


def test_r11_a_console_credential_acts_only_for_a_named_person() -> None:
    assert refusal({}) == (401, "a console credential acts only for a named person (X-Acting-Person)")
    assert refusal({"X-Acting-Roles": "staff"})[0] == 401
    assert refusal({"X-Acting-Person": "Tanaka Hanako"})[0] == 401  # not a person id
    assert refusal({"X-Acting-Person": "scheduler"})[0] == 401  # the service's own name, nobody's


def test_r11_the_console_gets_only_what_it_asserts_of_what_the_credential_holds() -> None:
    headers = {
        "X-Acting-Person": "tanaka.hanako",
        "X-Acting-Roles": "staff",
        "X-Acting-Offices": "kushiro-gyosei",
    }
    assert acting(headers.items(), delegates=True, roles=ROLES, offices=OFFICES) == Acting(
        "tanaka.hanako", frozenset({"staff"}), ("kushiro-gyosei",)
    )
    bare = acting({"x-acting-person": "tanaka.hanako"}.items(), delegates=True, roles=ROLES, offices=OFFICES)
    assert bare == Acting("tanaka.hanako", frozenset(), ())  # none asserted: none
    assert refusal(headers | {"X-Acting-Roles": "staff,auditor"}) == (
        403,
        "X-Acting-Roles: the console credential does not hold auditor",
    )
    assert refusal(headers | {"X-Acting-Offices": "kushiro-gyosei, tokyo"})[0] == 403
    every = acting(headers.items(), delegates=True, roles=ROLES, offices=("*",))
    assert every is not None and every.offices == ("kushiro-gyosei",)


def test_r11_acting_headers_from_a_plain_credential_are_refused() -> None:
    assert acting([], delegates=False, roles=ROLES) is None
    with pytest.raises(Refusal) as refused:
        acting([("x-acting-person", "someone.else")], delegates=False, roles=ROLES)
    assert refused.value.status_code == 403 and "only a console credential" in refused.value.reason


def test_person_ids_and_their_default_from_a_name() -> None:
    assert person_id("tanaka.hanako") == "tanaka.hanako"
    for bad in ("", "Tanaka", "-x", "a" * 65, "tanaka hanako", "scheduler", "system"):
        with pytest.raises(ValueError, match="not a person id"):
            person_id(bad)
    assert derive_person("Tanaka Hanako") == "tanaka-hanako"
    assert derive_person("ｋｇ－desk 1") == "kg-desk-1"  # NFKC: full-width letters
    with pytest.raises(ValueError, match="--person"):
        derive_person("監査 花子")
    with pytest.raises(ValueError, match="--person"):
        derive_person("Scheduler")  # the services' own name for what they do themselves
