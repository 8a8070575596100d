"""Attributes for access control (ABAC) in Identity Center: sso-admin's four
InstanceAccessControlAttributeConfiguration actions over boto3, checked against botocore's
model; and the directory user's attributes as the session tags of the roles the access
portal's API (the CLI's GetRoleCredentials) and the portal open — decided by the broker's own
policy evaluation of a permission set that lets each person read only their own
department's resources. Each refusal beside the honest call that succeeds."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.exceptions
import pytest

from broker.identitycenter.abac import SOURCES
from broker.identitycenter.access import NotAssigned
from tests.helpers import Broker, Creds, start_broker
from tests.integration.test_identity_center import strict
from tests.sso_world import MovableClock, SsoWorld, Tenant, assign, code_of, make_world

ENTERPRISE = "aws:identitystore:enterprise"
DEPARTMENT = {"Key": "Department", "Value": {"Source": ["${path:enterprise.department}"]}}
COST_CENTER = {"Key": "CostCenter", "Value": {"Source": ["${path:enterprise.costCenter}"]}}
EMAIL = {"Key": "Email", "Value": {"Source": ["${path:emails[primary eq true].value}"]}}


def configuration(*attributes: dict[str, Any]) -> dict[str, Any]:
    return {"InstanceAccessControlAttributeConfiguration": {
        "AccessControlAttributes": list(attributes)}}


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass
class Abac:
    world: SsoWorld
    tenant: Tenant
    permission_set_arn: str
    people: dict[str, str]  # name → user id

    @property
    def broker(self) -> Broker:
        return self.world.broker

    def sso_admin(self) -> Any:
        return strict(self.broker.client("sso-admin", self.tenant.root))

    def identitystore(self) -> Any:
        return self.broker.client("identitystore", self.tenant.root)

    def role_credentials(self, who: str) -> Creds:
        """What the CLI does: the device flow approved for ``who``, then GetRoleCredentials
        through boto3's sso client."""
        oidc, client = self.world.client("sso-oidc"), self.world.register()
        started = oidc.start_device_authorization(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            startUrl=self.tenant.start_url)
        self.world.approve(started["userCode"], self.tenant, self.people[who])
        token = oidc.create_token(
            clientId=client["clientId"], clientSecret=client["clientSecret"],
            grantType="urn:ietf:params:oauth:grant-type:device_code",
            deviceCode=started["deviceCode"])["accessToken"]
        creds = self.world.client("sso").get_role_credentials(
            accessToken=token, accountId=self.tenant.account_id,
            roleName="DepartmentData")["roleCredentials"]
        return Creds(creds["accessKeyId"], creds["secretAccessKey"], creds["sessionToken"])

    def access(self, who: str, *, asserted: dict[str, str] | None = None) -> Creds:
        """What the portal's "Access keys" does for a person signed in (through an external
        IdP, when ``asserted`` holds what its assertion carried)."""
        ic = self.broker.runtime.identity_center

        async def run() -> Creds:
            instance = await ic.instances.by_store(self.tenant.identity_store_id)
            assert instance is not None
            user = await ic.directory.user(self.tenant.account_id,
                                           self.tenant.identity_store_id, self.people[who])
            assert user is not None
            issued = await ic.access.credentials(instance, user, self.tenant.account_id,
                                                 "DepartmentData", asserted=asserted)
            return Creds(issued.session.access_key_id, issued.session.secret_access_key,
                         issued.token)
        return self.broker.server.call(run())

    def reads(self, creds: Creds) -> set[str]:
        """The department data roles the session may read (iam:GetRole, authorized by the
        permission set's policy on the roles' Department tags)."""
        iam = boto3.client("iam", endpoint_url=self.broker.url, region_name="us-east-1",
                           aws_access_key_id=creds.access_key_id,
                           aws_secret_access_key=creds.secret_access_key,
                           aws_session_token=creds.session_token)
        readable = set()
        for name in ("sales-data", "engineering-data"):
            try:
                iam.get_role(RoleName=name)
            except botocore.exceptions.ClientError as exc:
                assert code_of_error(exc) == "AccessDenied", exc
            else:
                readable.add(name)
        return readable

    def lists_roles(self, creds: Creds) -> bool:
        """iam:ListRoles: allowed by a condition on aws:PrincipalTag/Department = Sales."""
        iam = boto3.client("iam", endpoint_url=self.broker.url, region_name="us-east-1",
                           aws_access_key_id=creds.access_key_id,
                           aws_secret_access_key=creds.secret_access_key,
                           aws_session_token=creds.session_token)
        try:
            iam.list_roles()
        except botocore.exceptions.ClientError as exc:
            assert code_of_error(exc) == "AccessDenied", exc
            return False
        return True


def code_of_error(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response["Error"]["Code"])


@pytest.fixture(scope="module")
def abac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Abac]:
    clock = MovableClock()
    broker = start_broker(tmp_path_factory.mktemp("sso-abac"), clock=clock)
    try:
        world = make_world(broker, clock)
        tenant = world.one
        root_iam = broker.client("iam", tenant.root)
        trust = doc({"Effect": "Allow", "Principal": {"AWS": tenant.account_id},
                     "Action": "sts:AssumeRole"})
        for name, department in (("sales-data", "Sales"), ("engineering-data", "Engineering")):
            root_iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                                 Tags=[{"Key": "Department", "Value": department}])
        admin = broker.client("sso-admin", tenant.root)
        ps = admin.create_permission_set(InstanceArn=tenant.instance_arn,
                                         Name="DepartmentData")["PermissionSet"]
        admin.put_inline_policy_to_permission_set(
            InstanceArn=tenant.instance_arn, PermissionSetArn=ps["PermissionSetArn"],
            InlinePolicy=doc(
                {"Effect": "Allow", "Action": "iam:GetRole",
                 "Resource": f"arn:aws:iam::{tenant.account_id}:role/*",
                 "Condition": {"StringEquals": {
                     "aws:ResourceTag/Department": "${aws:PrincipalTag/Department}"}}},
                {"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*",
                 "Condition": {"StringEquals": {"aws:PrincipalTag/Department": "Sales"}}}))
        store = broker.client("identitystore", tenant.root)
        people = {}
        for name, department in (("alice", "Sales"), ("bob", "Engineering"), ("carol", None)):
            extra: dict[str, Any] = {} if department is None else {
                "Extensions": {ENTERPRISE: {"department": department, "costCenter": "42"}}}
            people[name] = store.create_user(
                IdentityStoreId=tenant.identity_store_id, UserName=f"{name}-{tenant.account_id}",
                DisplayName=name.title(), Name={"GivenName": name.title(), "FamilyName": "P"},
                Emails=[{"Value": f"{name}@example.com", "Primary": True}],
                **extra)["UserId"]
        found = Abac(world, tenant, ps["PermissionSetArn"], people)
        for user_id in people.values():
            assign(broker, Tenant(**{**tenant.__dict__,
                                     "permission_set_arn": ps["PermissionSetArn"]}), user_id)
        found.sso_admin().create_instance_access_control_attribute_configuration(
            InstanceArn=tenant.instance_arn, **configuration(DEPARTMENT, COST_CENTER, EMAIL))
        yield found
    finally:
        broker.stop()


# -- the four actions ---------------------------------------------------------------------------

def test_the_configuration_from_creation_to_deletion(abac: Abac) -> None:
    other = abac.world.two
    sso = strict(abac.broker.client("sso-admin", other.root))
    arn = {"InstanceArn": other.instance_arn}
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.describe_instance_access_control_attribute_configuration(**arn)
    assert code_of(refused) == "ResourceNotFoundException"
    # Enabled with no attribute at all (ABAC on, nothing mapped yet), as AWS allows.
    sso.create_instance_access_control_attribute_configuration(**arn, **configuration())
    described = sso.describe_instance_access_control_attribute_configuration(**arn)
    assert described["Status"] == "ENABLED"
    assert described["InstanceAccessControlAttributeConfiguration"] == {
        "AccessControlAttributes": []}
    # One configuration per instance: a second is ConflictException.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.create_instance_access_control_attribute_configuration(
            **arn, **configuration(DEPARTMENT))
    assert code_of(refused) == "ConflictException"
    sso.update_instance_access_control_attribute_configuration(
        **arn, **configuration(DEPARTMENT, COST_CENTER))
    described = sso.describe_instance_access_control_attribute_configuration(**arn)
    assert described["InstanceAccessControlAttributeConfiguration"][
        "AccessControlAttributes"] == [DEPARTMENT, COST_CENTER]
    sso.delete_instance_access_control_attribute_configuration(**arn)
    for gone in (sso.describe_instance_access_control_attribute_configuration,
                 sso.delete_instance_access_control_attribute_configuration):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            gone(**arn)
        assert code_of(refused) == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sso.update_instance_access_control_attribute_configuration(
            **arn, **configuration(DEPARTMENT))
    assert code_of(refused) == "ResourceNotFoundException"


def test_every_source_aws_lists_is_accepted_and_nothing_else(abac: Abac) -> None:
    other = abac.world.two
    sso = strict(abac.broker.client("sso-admin", other.root, validate=False))
    arn = {"InstanceArn": other.instance_arn}
    every = [{"Key": f"k{i}", "Value": {"Source": [source]}}
             for i, source in enumerate(SOURCES)]
    assert len(every) == 23
    sso.create_instance_access_control_attribute_configuration(**arn, **configuration(*every))
    try:
        shown = sso.describe_instance_access_control_attribute_configuration(**arn)
        assert shown["InstanceAccessControlAttributeConfiguration"][
            "AccessControlAttributes"] == every
        bad: list[tuple[str, list[dict[str, Any]]]] = [
            ("unknown path", [{"Key": "a", "Value": {"Source": ["${path:shoeSize}"]}}]),
            ("not a path", [{"Key": "a", "Value": {"Source": ["Sales"]}}]),
            ("user: variable", [{"Key": "a", "Value": {"Source": ["${user:email}"]}}]),
            ("no source", [{"Key": "a", "Value": {"Source": []}}]),
            ("two sources", [{"Key": "a", "Value": {"Source": [
                "${path:userName}", "${path:title}"]}}]),
            ("key too long", [{"Key": "k" * 129, "Value": {"Source": ["${path:title}"]}}]),
            ("empty key", [{"Key": "", "Value": {"Source": ["${path:title}"]}}]),
            ("key pattern", [{"Key": "a,b", "Value": {"Source": ["${path:title}"]}}]),
            ("source too long", [{"Key": "a", "Value": {"Source": ["$" * 257]}}]),
            ("keys twice", [DEPARTMENT, {**COST_CENTER, "Key": "department"}]),
            ("51 attributes", [{"Key": f"k{i}", "Value": {"Source": ["${path:title}"]}}
                               for i in range(51)]),
        ]
        for what, attributes in bad:
            with pytest.raises(botocore.exceptions.ClientError) as refused:
                sso.update_instance_access_control_attribute_configuration(
                    **arn, **configuration(*attributes))
            assert code_of(refused) == "ValidationException", what
        # Nothing half-written: the configuration is still the whole honest one.
        assert sso.describe_instance_access_control_attribute_configuration(**arn)[
            "InstanceAccessControlAttributeConfiguration"]["AccessControlAttributes"] == every
        # The control: 50 attributes, the limit, are taken; the source named in any case.
        fifty = [{"Key": f"k{i}", "Value": {"Source": ["${PATH:Title}"]}} for i in range(50)]
        sso.update_instance_access_control_attribute_configuration(
            **arn, **configuration(*fifty))
        stored = sso.describe_instance_access_control_attribute_configuration(**arn)[
            "InstanceAccessControlAttributeConfiguration"]["AccessControlAttributes"]
        assert len(stored) == 50 and stored[0]["Value"]["Source"] == ["${path:title}"]
    finally:
        sso.delete_instance_access_control_attribute_configuration(**arn)


def test_the_actions_are_authorized_and_another_accounts_instance_is_not_found(
        abac: Abac) -> None:
    other = abac.world.two
    name, creds = abac.broker.new_user(other.root)
    nobody = strict(abac.broker.client("sso-admin", creds))
    arn = {"InstanceArn": other.instance_arn}
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        nobody.describe_instance_access_control_attribute_configuration(**arn)
    assert code_of(refused) == "AccessDeniedException"
    abac.broker.client("iam", other.root).put_user_policy(
        UserName=name, PolicyName="abac", PolicyDocument=doc(
            {"Effect": "Allow", "Action": "sso:*InstanceAccessControlAttributeConfiguration",
             "Resource": other.instance_arn}))
    with pytest.raises(botocore.exceptions.ClientError) as refused:  # allowed, none there
        nobody.describe_instance_access_control_attribute_configuration(**arn)
    assert code_of(refused) == "ResourceNotFoundException"
    # Tenant one's instance, named by tenant two's administrator: not found, not changed.
    theirs = strict(abac.broker.client("sso-admin", other.root))
    for call, params in (
            (theirs.describe_instance_access_control_attribute_configuration, {}),
            (theirs.update_instance_access_control_attribute_configuration,
             configuration()),
            (theirs.delete_instance_access_control_attribute_configuration, {})):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            call(InstanceArn=abac.tenant.instance_arn, **params)
        assert code_of(refused) == "ResourceNotFoundException"
    # The control: the owner sees its configuration, whole.
    assert abac.sso_admin().describe_instance_access_control_attribute_configuration(
        InstanceArn=abac.tenant.instance_arn)["InstanceAccessControlAttributeConfiguration"][
        "AccessControlAttributes"] == [DEPARTMENT, COST_CENTER, EMAIL]


# -- attributes as session tags -----------------------------------------------------------------

def test_a_person_reads_only_their_own_departments_data(abac: Abac) -> None:
    alice, bob = abac.role_credentials("alice"), abac.role_credentials("bob")
    assert abac.reads(alice) == {"sales-data"}  # the honest control
    assert abac.reads(bob) == {"engineering-data"}
    assert abac.lists_roles(alice) and not abac.lists_roles(bob)
    # Carol has no department in the directory: no tag, so no department's data.
    carol = abac.role_credentials("carol")
    assert abac.reads(carol) == set() and not abac.lists_roles(carol)


def test_a_change_of_department_is_seen_in_the_next_session(abac: Abac) -> None:
    store, bob = abac.identitystore(), abac.people["bob"]
    before = abac.role_credentials("bob")
    path = f"{ENTERPRISE}.department"
    store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=bob,
                      Operations=[{"AttributePath": path, "AttributeValue": "Sales"}])
    try:
        assert abac.reads(abac.role_credentials("bob")) == {"sales-data"}
        # The session opened before keeps the tags it was given, as AWS's sessions do.
        assert abac.reads(before) == {"engineering-data"}
        store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=bob,
                          Operations=[{"AttributePath": path}])  # removed from the directory
        assert abac.reads(abac.role_credentials("bob")) == set()
    finally:
        store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=bob,
                          Operations=[{"AttributePath": path, "AttributeValue": "Engineering"}])
    assert abac.reads(abac.role_credentials("bob")) == {"engineering-data"}


def test_without_a_configuration_no_attribute_is_a_tag(abac: Abac) -> None:
    sso, arn = abac.sso_admin(), {"InstanceArn": abac.tenant.instance_arn}
    assert abac.reads(abac.role_credentials("alice")) == {"sales-data"}  # the control
    sso.update_instance_access_control_attribute_configuration(
        **arn, **configuration(COST_CENTER))  # Department no longer mapped
    try:
        assert abac.reads(abac.role_credentials("alice")) == set()
        sso.delete_instance_access_control_attribute_configuration(**arn)
        assert abac.reads(abac.role_credentials("alice")) == set()
        # Asserted attributes need ABAC enabled too, as AWS's.
        assert abac.reads(abac.access("bob", asserted={"Department": "Engineering"})) == set()
    finally:
        with contextlib.suppress(botocore.exceptions.ClientError):  # deleted above
            sso.delete_instance_access_control_attribute_configuration(**arn)
        sso.create_instance_access_control_attribute_configuration(
            **arn, **configuration(DEPARTMENT, COST_CENTER, EMAIL))
    assert abac.reads(abac.role_credentials("alice")) == {"sales-data"}


def test_an_external_idps_asserted_attributes(abac: Abac) -> None:
    """``…/SAML/Attributes/AccessControl:KEY`` values, passed by the external sign-in: a key
    the configuration does not map becomes a tag; one it maps keeps the directory's value
    (AWS: "IAM Identity Center will send the value from its Identity Store")."""
    assert abac.reads(abac.access("carol")) == set()  # the control: no department
    assert abac.reads(abac.access("carol", asserted={"Department": "Engineering"})) == \
        {"engineering-data"}
    assert abac.reads(abac.access("alice", asserted={"Department": "Engineering"})) == \
        {"sales-data"}
    assert abac.lists_roles(abac.access("alice", asserted={"Team": "Blue"}))


def test_a_value_no_session_tag_can_carry_refuses_the_session(abac: Abac) -> None:
    store, carol = abac.identitystore(), abac.people["carol"]
    path = f"{ENTERPRISE}.department"
    for value in ("R&D", "x" * 257):
        store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=carol,
                          Operations=[{"AttributePath": path, "AttributeValue": value}])
        with pytest.raises(NotAssigned, match="Department"):
            abac.access("carol")
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            abac.role_credentials("carol")
        assert code_of(refused) == "ResourceNotFoundException"
    for asserted in ({"a,b": "x"}, {"Team": "a;b"},
                     {f"k{i}": "v" for i in range(48)}):  # 3 configured + 48: over 50
        with pytest.raises(NotAssigned):
            abac.access("alice", asserted=asserted)
    # The control: an honest value opens the session, tagged.
    store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=carol,
                      Operations=[{"AttributePath": path, "AttributeValue": "R and D"}])
    assert abac.reads(abac.access("carol")) == set()
    assert abac.reads(abac.access("alice", asserted={f"k{i}": "v" for i in range(47)})) == \
        {"sales-data"}
    store.update_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=carol,
                      Operations=[{"AttributePath": path}])


def test_every_source_reads_the_stored_user(abac: Abac) -> None:
    """Each of AWS's sources, read from a user written by identitystore with every attribute
    (the enterprise extension where SCIM puts it too)."""
    store = abac.identitystore()
    user_id = store.create_user(
        IdentityStoreId=abac.tenant.identity_store_id, UserName=f"dana-{abac.tenant.account_id}",
        DisplayName="Dana D", NickName="dd", Name={"GivenName": "Dana", "FamilyName": "D"},
        Emails=[{"Value": "dana@example.com", "Type": "work", "Primary": True}],
        Addresses=[{"StreetAddress": "1 Main St", "Locality": "Springfield",
                    "Region": "OR", "PostalCode": "97477", "Country": "US",
                    "Formatted": "1 Main St Springfield", "Type": "Work"}],
        PhoneNumbers=[{"Value": "+1 555 0100", "Type": "work"}], UserType="Employee",
        Title="Engineer", Locale="en-US", Timezone="America/Los_Angeles",
        Extensions={ENTERPRISE: {"employeeNumber": "7", "costCenter": "42",
                                 "organization": "Corp", "division": "West",
                                 "department": "Sales", "manager": {"value": "m-1"}}}
    )["UserId"]
    keys = {f"k{i}": source for i, source in enumerate(SOURCES)}
    sso, arn = abac.sso_admin(), {"InstanceArn": abac.tenant.instance_arn}
    sso.update_instance_access_control_attribute_configuration(**arn, **configuration(
        *({"Key": k, "Value": {"Source": [s]}} for k, s in keys.items())))
    try:
        abac.people["dana"] = user_id
        ic = abac.broker.runtime.identity_center

        async def tags() -> dict[str, str]:
            instance = await ic.instances.by_store(abac.tenant.identity_store_id)
            assert instance is not None
            user = await ic.directory.user(abac.tenant.account_id,
                                           abac.tenant.identity_store_id, user_id)
            assert user is not None
            return dict(await ic.access.session_tags(instance, user))
        found = {keys[k]: v for k, v in abac.broker.server.call(tags()).items()}
        assert found == {
            "${path:userName}": f"dana-{abac.tenant.account_id}",
            "${path:name.familyName}": "D", "${path:name.givenName}": "Dana",
            "${path:displayName}": "Dana D", "${path:nickName}": "dd",
            "${path:emails[primary eq true].value}": "dana@example.com",
            '${path:addresses[type eq "work"].streetAddress}': "1 Main St",
            '${path:addresses[type eq "work"].locality}': "Springfield",
            '${path:addresses[type eq "work"].region}': "OR",
            '${path:addresses[type eq "work"].postalCode}': "97477",
            '${path:addresses[type eq "work"].country}': "US",
            '${path:addresses[type eq "work"].formatted}': "1 Main St Springfield",
            '${path:phoneNumbers[type eq "work"].value}': "+1 555 0100",
            "${path:userType}": "Employee", "${path:title}": "Engineer",
            "${path:locale}": "en-US", "${path:timezone}": "America/Los_Angeles",
            "${path:enterprise.employeeNumber}": "7", "${path:enterprise.costCenter}": "42",
            "${path:enterprise.organization}": "Corp", "${path:enterprise.division}": "West",
            "${path:enterprise.department}": "Sales", "${path:enterprise.manager.value}": "m-1"}
    finally:
        sso.update_instance_access_control_attribute_configuration(
            **arn, **configuration(DEPARTMENT, COST_CENTER, EMAIL))
        store.delete_user(IdentityStoreId=abac.tenant.identity_store_id, UserId=user_id)


def test_the_management_console_session_carries_the_tags(abac: Abac) -> None:
    """The "Management console": the sign-in token of Access.console_url, redeemed as the
    federation endpoint's login redeems it, holds the tagged session — asserted attributes
    included."""
    ic, runtime = abac.broker.runtime.identity_center, abac.broker.runtime

    def console(who: str, asserted: dict[str, str] | None = None) -> Creds:
        async def run() -> Creds:
            instance = await ic.instances.by_store(abac.tenant.identity_store_id)
            user = await ic.directory.user(abac.tenant.account_id,
                                           abac.tenant.identity_store_id, abac.people[who])
            assert instance is not None and user is not None
            url = await ic.access.console_url(instance, user, abac.tenant.account_id,
                                              "DepartmentData", asserted=asserted)
            [token] = parse_qs(urlsplit(url).query)["SigninToken"]
            issued = await runtime.federation_endpoint.redeem(token)
            assert issued is not None
            return Creds(issued.session.access_key_id, issued.session.secret_access_key,
                         issued.token)
        return abac.broker.server.call(run())

    assert abac.reads(console("alice")) == {"sales-data"}
    assert abac.reads(console("bob")) == {"engineering-data"}
    assert abac.reads(console("carol")) == set()
    assert abac.reads(console("carol", {"Department": "Sales"})) == {"sales-data"}
