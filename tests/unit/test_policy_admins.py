"""Who may administer the gateway: `identity.admins` selectors, and the development key."""

from __future__ import annotations

from manifold.identity.api_keys import DEV_KEY_ID
from manifold.policy.admins import is_admin
from manifold.principal import ANONYMOUS, Credential, CredentialKind, Principal, PrincipalKind

KEY = Credential(CredentialKind.API_KEY, "k1")


def user(name: str, *, teams: tuple[str, ...] = (), credential: Credential = KEY) -> Principal:
    return Principal(PrincipalKind.USER, name, credential, email=name, teams=frozenset(teams))


def test_a_principal_named_by_an_admin_selector_is_an_admin() -> None:
    admins = ["user:*@ops.corp.com", "team:platform", "sa:deployer"]
    assert is_admin(user("ann@ops.corp.com"), admins)
    assert is_admin(user("bob@corp.com", teams=("platform",)), admins)
    assert is_admin(Principal(PrincipalKind.SERVICE_ACCOUNT, "deployer", KEY), admins)


def test_anyone_else_is_not_an_admin() -> None:
    admins = ["user:*@ops.corp.com", "team:platform"]
    assert not is_admin(user("eve@corp.com", teams=("eng",)), admins)
    assert not is_admin(Principal(PrincipalKind.SERVICE_ACCOUNT, "platform", KEY), admins)
    assert not is_admin(ANONYMOUS, admins)
    assert not is_admin(user("ann@ops.corp.com"), [])


def test_the_development_key_is_always_an_admin() -> None:
    dev = user("dev", credential=Credential(CredentialKind.API_KEY, DEV_KEY_ID))
    assert is_admin(dev, [])
    # The same key id from another kind of credential is not the development key.
    assert not is_admin(user("dev", credential=Credential(CredentialKind.IDP_JWT, DEV_KEY_ID)), [])
