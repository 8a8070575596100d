"""Generate the broker's input shapes from botocore's service models.

    .venv/bin/python tools/gen_shapes.py

writes broker/iam/model.py, broker/sts/model.py, broker/organizations/model.py and
broker/identitycenter/{model,store_model,portal_model,oidc_model}.py: for every operation the
broker answers, its input Structure with the constraints of AWS's model (lengths, ranges,
patterns, enums, required members), under AWS's shape names. The files are committed and
reviewed like code; tests/conformance/test_botocore_models.py proves they still say what
botocore says.
"""

from __future__ import annotations

import keyword
import sys
from pathlib import Path
from typing import Any

import botocore
import botocore.session

ROOT = Path(__file__).resolve().parents[1]

OPERATIONS = {
    "sts": [
        "GetCallerIdentity", "GetSessionToken", "GetFederationToken", "GetAccessKeyInfo",
        "AssumeRole", "DecodeAuthorizationMessage", "AssumeRoleWithSAML",
        "AssumeRoleWithWebIdentity", "AssumeRoot",
    ],
    "iam": [
        # users and access keys
        "CreateUser", "GetUser", "ListUsers", "DeleteUser", "UpdateUser", "TagUser",
        "UntagUser", "ListUserTags", "PutUserPermissionsBoundary",
        "DeleteUserPermissionsBoundary", "CreateAccessKey", "ListAccessKeys", "UpdateAccessKey",
        "DeleteAccessKey", "GetAccessKeyLastUsed",
        # login profiles and the password policy
        "CreateLoginProfile", "GetLoginProfile", "UpdateLoginProfile", "DeleteLoginProfile",
        "ChangePassword", "UpdateAccountPasswordPolicy", "GetAccountPasswordPolicy",
        "DeleteAccountPasswordPolicy",
        # groups
        "CreateGroup", "GetGroup", "ListGroups", "UpdateGroup", "DeleteGroup",
        "AddUserToGroup", "RemoveUserFromGroup", "ListGroupsForUser",
        # roles
        "CreateRole", "GetRole", "ListRoles", "UpdateRole", "UpdateRoleDescription",
        "UpdateAssumeRolePolicy", "DeleteRole", "TagRole", "UntagRole", "ListRoleTags",
        "PutRolePermissionsBoundary", "DeleteRolePermissionsBoundary",
        # managed policies and their attachments
        "CreatePolicy", "GetPolicy", "ListPolicies", "DeletePolicy", "CreatePolicyVersion",
        "GetPolicyVersion", "ListPolicyVersions", "DeletePolicyVersion",
        "SetDefaultPolicyVersion", "TagPolicy", "UntagPolicy", "ListPolicyTags",
        "ListEntitiesForPolicy", "AttachUserPolicy", "DetachUserPolicy",
        "ListAttachedUserPolicies", "AttachGroupPolicy", "DetachGroupPolicy",
        "ListAttachedGroupPolicies", "AttachRolePolicy", "DetachRolePolicy",
        "ListAttachedRolePolicies",
        # inline policies
        "PutUserPolicy", "GetUserPolicy", "ListUserPolicies", "DeleteUserPolicy",
        "PutGroupPolicy", "GetGroupPolicy", "ListGroupPolicies", "DeleteGroupPolicy",
        "PutRolePolicy", "GetRolePolicy", "ListRolePolicies", "DeleteRolePolicy",
        # the account
        "CreateAccountAlias", "ListAccountAliases", "DeleteAccountAlias",
        "GetAccountAuthorizationDetails",
        # simulation
        "SimulatePrincipalPolicy", "SimulateCustomPolicy",
        # SAML providers
        "CreateSAMLProvider", "GetSAMLProvider", "ListSAMLProviders", "UpdateSAMLProvider",
        "DeleteSAMLProvider", "TagSAMLProvider", "UntagSAMLProvider", "ListSAMLProviderTags",
        # OpenID Connect providers
        "CreateOpenIDConnectProvider", "GetOpenIDConnectProvider",
        "ListOpenIDConnectProviders", "DeleteOpenIDConnectProvider",
        "AddClientIDToOpenIDConnectProvider", "RemoveClientIDFromOpenIDConnectProvider",
        "UpdateOpenIDConnectProviderThumbprint", "TagOpenIDConnectProvider",
        "UntagOpenIDConnectProvider", "ListOpenIDConnectProviderTags",
        # MFA devices
        "CreateVirtualMFADevice", "EnableMFADevice", "DeactivateMFADevice",
        "DeleteVirtualMFADevice", "ResyncMFADevice", "ListMFADevices", "ListVirtualMFADevices",
        "GetMFADevice", "TagMFADevice", "UntagMFADevice", "ListMFADeviceTags",
        # the credential report
        "GenerateCredentialReport", "GetCredentialReport",
        # centralized root access
        "EnableOrganizationsRootCredentialsManagement", "EnableOrganizationsRootSessions",
        "DisableOrganizationsRootCredentialsManagement", "DisableOrganizationsRootSessions",
        "ListOrganizationsFeatures",
    ],
    "organizations": [
        # the organization and its roots
        "CreateOrganization", "DescribeOrganization", "DeleteOrganization", "ListRoots",
        "EnableAWSServiceAccess", "DisableAWSServiceAccess",
        "ListAWSServiceAccessForOrganization",
        # organizational units
        "CreateOrganizationalUnit", "UpdateOrganizationalUnit", "DeleteOrganizationalUnit",
        "DescribeOrganizationalUnit", "ListOrganizationalUnitsForParent", "ListChildren",
        "ListParents",
        # accounts
        "CreateAccount", "DescribeCreateAccountStatus", "ListCreateAccountStatus",
        "InviteAccountToOrganization", "AcceptHandshake", "DeclineHandshake",
        "CancelHandshake", "DescribeHandshake", "ListHandshakesForAccount",
        "ListHandshakesForOrganization", "MoveAccount", "ListAccounts",
        "ListAccountsForParent", "DescribeAccount", "RemoveAccountFromOrganization",
        "LeaveOrganization",
        # policies
        "EnablePolicyType", "DisablePolicyType", "CreatePolicy", "UpdatePolicy",
        "DescribePolicy", "DeletePolicy", "ListPolicies", "AttachPolicy", "DetachPolicy",
        "ListPoliciesForTarget", "ListTargetsForPolicy",
        # tags
        "TagResource", "UntagResource", "ListTagsForResource",
    ],
    "sso-admin": [
        # IAM Identity Center's instances
        "CreateInstance", "ListInstances", "DescribeInstance", "UpdateInstance",
        "DeleteInstance",
        # permission sets and their policies
        "CreatePermissionSet", "DescribePermissionSet", "UpdatePermissionSet",
        "DeletePermissionSet", "ListPermissionSets", "PutInlinePolicyToPermissionSet",
        "GetInlinePolicyForPermissionSet", "DeleteInlinePolicyFromPermissionSet",
        "AttachManagedPolicyToPermissionSet", "DetachManagedPolicyFromPermissionSet",
        "ListManagedPoliciesInPermissionSet",
        "AttachCustomerManagedPolicyReferenceToPermissionSet",
        "DetachCustomerManagedPolicyReferenceFromPermissionSet",
        "ListCustomerManagedPolicyReferencesInPermissionSet",
        "PutPermissionsBoundaryToPermissionSet", "GetPermissionsBoundaryForPermissionSet",
        "DeletePermissionsBoundaryFromPermissionSet",
        # assignments and provisioning
        "CreateAccountAssignment", "DeleteAccountAssignment",
        "DescribeAccountAssignmentCreationStatus", "DescribeAccountAssignmentDeletionStatus",
        "ListAccountAssignmentCreationStatus", "ListAccountAssignmentDeletionStatus",
        "ProvisionPermissionSet", "DescribePermissionSetProvisioningStatus",
        "ListPermissionSetProvisioningStatus", "ListAccountAssignments",
        "ListAccountAssignmentsForPrincipal", "ListPermissionSetsProvisionedToAccount",
        "ListAccountsForProvisionedPermissionSet",
        # tags
        "TagResource", "UntagResource", "ListTagsForResource",
        # attributes for access control (ABAC)
        "CreateInstanceAccessControlAttributeConfiguration",
        "DescribeInstanceAccessControlAttributeConfiguration",
        "UpdateInstanceAccessControlAttributeConfiguration",
        "DeleteInstanceAccessControlAttributeConfiguration",
    ],
    "identitystore": [
        "CreateUser", "DescribeUser", "UpdateUser", "DeleteUser", "ListUsers", "GetUserId",
        "CreateGroup", "DescribeGroup", "UpdateGroup", "DeleteGroup", "ListGroups",
        "GetGroupId", "CreateGroupMembership", "DeleteGroupMembership",
        "DescribeGroupMembership", "ListGroupMemberships", "ListGroupMembershipsForMember",
        "IsMemberInGroups", "GetGroupMembershipId",
    ],
    # The access portal's API (rest-json, bearer token) and its OAuth 2.0 server.
    "sso": ["ListAccounts", "ListAccountRoles", "GetRoleCredentials", "Logout"],
    "sso-oidc": ["RegisterClient", "StartDeviceAuthorization", "CreateToken"],
}
# The JSON protocols carry timestamps and maps as themselves; the Query protocol's inputs
# take no timestamp the broker reads.
JSON_SERVICES = {"organizations", "sso-admin", "identitystore", "sso", "sso-oidc"}
# rest-json services: each action's method and path, and the members read from the path, the
# query string or a header (``HTTP`` in the generated module).
REST_SERVICES = {"sso", "sso-oidc"}
TITLES = {"organizations": "Organizations", "sso-admin": "IAM Identity Center (sso-admin)",
          "identitystore": "IAM Identity Center's identity store (identitystore)",
          "sso": "the access portal (sso)", "sso-oidc": "IAM Identity Center's OIDC (sso-oidc)"}


# The names the generated modules import: a model shape of the same name gets a trailing _.
_TAKEN = {"Boolean", "Document", "Integer", "ListOf", "MapOf", "String", "Timestamp",
          "optional", "required", "struct"}


def py_name(shape_name: str) -> str:
    name = shape_name.replace("-", "_")
    return name + "_" if keyword.iskeyword(name) or name in _TAKEN else name


class Writer:
    def __init__(self, *, json: bool = False) -> None:
        self.json = json
        self.defined: dict[str, str] = {}  # shape name -> python name
        self.lines: list[str] = []

    def shape(self, shape: Any) -> str:
        """Define a shape (and what it holds) once; return its python name."""
        name = py_name(shape.name)
        if shape.name in self.defined:
            return self.defined[shape.name]
        meta = shape.metadata
        t = shape.type_name
        if t == "string":
            args = []
            for key in ("min", "max"):
                if key in meta:
                    args.append(f"{key}={meta[key]}")
            if "pattern" in meta:
                args.append(f"pattern={meta['pattern']!r}")
            if shape.enum:
                args.append(f"enum={tuple(shape.enum)!r}")
            if meta.get("sensitive"):
                args.append("sensitive=True")
            expr = f"String({', '.join(args)})"
        elif t in ("integer", "long"):
            args = [f"{k}={meta[k]}" for k in ("min", "max") if k in meta]
            expr = f"Integer({', '.join(args)})"
        elif t == "boolean":
            expr = "Boolean()"
        elif t == "timestamp":
            # The Query inputs the broker answers take no timestamp.
            expr = "Timestamp()" if self.json else "String()"
        elif t == "map" and self.json:
            key, value = self.shape(shape.key), self.shape(shape.value)
            args = [key, value] + [f"{k}={meta[k]}" for k in ("min", "max") if k in meta]
            expr = f"MapOf({', '.join(args)})"
        elif t == "list":
            member = self.shape(shape.member)
            args = [member] + [f"{k}={meta[k]}" for k in ("min", "max") if k in meta]
            expr = f"ListOf({', '.join(args)})"
        elif t == "structure" and meta.get("document"):
            expr = "Document()"
        elif t == "structure":
            members = []
            for member_name, member in shape.members.items():
                inner = self.shape(member)
                kind = "required" if member_name in shape.required_members else "optional"
                members.append(f"    {kind}({member_name!r}, {inner}),")
            body = "\n".join(members)
            expr = f"struct(\n{body}\n)" if members else "struct()"
        else:
            raise SystemExit(f"unsupported shape type {t} ({shape.name})")
        self.defined[shape.name] = name
        self.lines.append(f"{name} = {expr}")
        return name


def generate(service: str) -> str:
    session = botocore.session.get_session()
    model = session.get_service_model(service)
    writer = Writer(json=service in JSON_SERVICES)
    requests = []
    http: list[str] = []
    for op_name in OPERATIONS[service]:
        op = model.operation_model(op_name)
        if op.input_shape is None:
            writer.lines.append(f"{op_name}Request = struct()")
        else:
            inner = writer.shape(op.input_shape)
            if inner != f"{op_name}Request":
                writer.lines.append(f"{op_name}Request = {inner}")
        requests.append(op_name)
        if service in REST_SERVICES:
            op = model.operation_model(op_name)
            where = {} if op.input_shape is None else {
                name: (m.serialization["location"], m.serialization.get("name", name))
                for name, m in op.input_shape.members.items() if "location" in m.serialization}
            http.append(f"    {op_name!r}: ({op.http['method']!r}, {op.http['requestUri']!r}, "
                        f"{where!r}),")
    if http:
        writer.lines.append("# Each action's method, path and the members read from outside the "
                            "body:\n# {member: (location, name)}.")
        writer.lines.append("HTTP: dict[str, tuple[str, str, dict[str, tuple[str, str]]]] = {\n"
                            + "\n".join(http) + "\n}")
    title = TITLES.get(service, service.upper())
    header = f'''"""Input shapes of the {title} actions the broker answers.

Generated by tools/gen_shapes.py from botocore {botocore.__version__}'s {service} model
(API version {model.api_version}); do not edit by hand. AWS's shape names; Java-style
patterns exactly as the model writes them (broker.aws.shapes translates them).
"""

from __future__ import annotations

from broker.aws.shapes import {{names}}

'''
    body = "\n".join(writer.lines)
    used = [n for n in ("Boolean", "Document", "Integer", "ListOf", "MapOf", "String",
                        "Timestamp", "optional", "required", "struct") if f"{n}(" in body]
    return header.replace("{names}", "(\n" + "".join(f"    {n},\n" for n in used) + ")") \
        + body + "\n"


def main() -> None:
    targets = {"iam": ROOT / "broker/iam/model.py", "sts": ROOT / "broker/sts/model.py",
               "organizations": ROOT / "broker/organizations/model.py",
               "sso-admin": ROOT / "broker/identitycenter/model.py",
               "identitystore": ROOT / "broker/identitycenter/store_model.py",
               "sso": ROOT / "broker/identitycenter/portal_model.py",
               "sso-oidc": ROOT / "broker/identitycenter/oidc_model.py"}
    for service, path in targets.items():
        path.write_text(generate(service))
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
