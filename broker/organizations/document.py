"""An organization's document and the rules its contents obey.

``Org`` reads (and, inside ``OrganizationsService``'s atomic updates, changes) the JSON document
that holds an organization's whole tree — the root, the OUs, the member accounts and where each
sits, the policies and their attachments, the tags, the trusted services, the root-access
features — in the API's vocabulary, and renders it in the shapes of botocore's model; it also
works out an account's place (``standing_of``: its path and the policies of each level above
it). The constants are AWS's (ids, quotas, the AWS managed policies), and so are the checks of
tags and of SCP and RCP documents (``check_tags``, ``check_content``).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.aws import arn
from broker.aws.errors import AwsError, MalformedPolicyDocument
from broker.organizations import errors
from broker.organizations.errors import OrgError, constraint, invalid_input
from broker.policy.document import PolicyKind, parse

SCP = "SERVICE_CONTROL_POLICY"
RCP = "RESOURCE_CONTROL_POLICY"
POLICY_TYPES = (SCP, RCP)
KIND_OF = {SCP: PolicyKind.SCP, RCP: PolicyKind.RCP}
_TYPE_PATH = {SCP: "service_control_policy", RCP: "resource_control_policy"}

FULL_ACCESS = "p-FullAWSAccess"
RCP_FULL_ACCESS = "p-RCPFullAWSAccess"
AWS_MANAGED: dict[str, dict[str, Any]] = {
    FULL_ACCESS: {
        "name": "FullAWSAccess", "type": SCP,
        "description": "Allows access to every operation",
        "content": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    },
    RCP_FULL_ACCESS: {
        "name": "RCPFullAWSAccess", "type": RCP,
        "description": "Allows access to every operation",
        "content": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}),
    },
}

MAX_POLICY_SIZE = 5120  # characters, white space included, as AWS counts them for SCPs and RCPs
MAX_PER_TARGET = 5  # policies of one type attached to one root, OU or account
MAX_OU_DEPTH = 5  # OUs nested under a root
MAX_TAGS = 50
HANDSHAKE_DAYS = 15
DEFAULT_ROLE = "OrganizationAccountAccessRole"
ROOT_FEATURES = ("RootCredentialsManagement", "RootSessions")
IAM_PRINCIPAL = "iam.amazonaws.com"
# An account creation still in progress this long after it was asked for lost its process:
# the next status request completes it.
RESUME_AFTER = timedelta(seconds=30)

_LOWER = string.ascii_lowercase + string.digits


def random_text(n: int, alphabet: str = _LOWER) -> str:
    """Random id characters (lower-case letters and digits, as AWS's ids)."""
    return "".join(secrets.choice(alphabet) for _ in range(n))


def now_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the organization's document ---------------------------------------------------------------


class Org:
    """One organization's document, read (and, inside ``OrganizationsService._change``,
    changed) through the vocabulary of the API."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def management(self) -> str:
        return str(self.data["management"])

    @property
    def root(self) -> dict[str, Any]:
        root: dict[str, Any] = self.data["root"]
        return root

    @property
    def root_id(self) -> str:
        return str(self.root["id"])

    @property
    def ous(self) -> dict[str, dict[str, Any]]:
        ous: dict[str, dict[str, Any]] = self.data["ous"]
        return ous

    @property
    def accounts(self) -> dict[str, dict[str, Any]]:
        accounts: dict[str, dict[str, Any]] = self.data["accounts"]
        return accounts

    @property
    def policies(self) -> dict[str, dict[str, Any]]:
        policies: dict[str, dict[str, Any]] = self.data["policies"]
        return policies

    @property
    def attached(self) -> dict[str, list[str]]:
        attached: dict[str, list[str]] = self.data["attached"]
        return attached

    def enabled(self, policy_type: str) -> bool:
        return bool(self.root["types"].get(policy_type) == "ENABLED")

    # ARNs, as AWS writes them
    @property
    def arn(self) -> str:
        return f"arn:{arn.PARTITION}:organizations::{self.management}:organization/{self.id}"

    def root_arn(self) -> str:
        return (f"arn:{arn.PARTITION}:organizations::{self.management}:root/{self.id}/"
                f"{self.root_id}")

    def ou_arn(self, ou_id: str) -> str:
        return f"arn:{arn.PARTITION}:organizations::{self.management}:ou/{self.id}/{ou_id}"

    def account_arn(self, account: str) -> str:
        return (f"arn:{arn.PARTITION}:organizations::{self.management}:account/{self.id}/"
                f"{account}")

    def policy_arn(self, policy_id: str) -> str:
        policy = self.policy(policy_id)
        kind = _TYPE_PATH[policy["type"]]
        if policy_id in AWS_MANAGED:
            return f"arn:{arn.PARTITION}:organizations::aws:policy/{kind}/{policy_id}"
        return (f"arn:{arn.PARTITION}:organizations::{self.management}:policy/{self.id}/"
                f"{kind}/{policy_id}")

    def handshake_arn(self, handshake_id: str) -> str:
        return (f"arn:{arn.PARTITION}:organizations::{self.management}:handshake/{self.id}/"
                f"invite/{handshake_id}")

    def target_arn(self, target: str) -> str:
        if target == self.root_id:
            return self.root_arn()
        if target in self.ous:
            return self.ou_arn(target)
        if target in self.accounts:
            return self.account_arn(target)
        return self.policy_arn(target)

    # the tree
    def policy(self, policy_id: str) -> dict[str, Any]:
        if policy_id in AWS_MANAGED:
            return AWS_MANAGED[policy_id]
        policy = self.policies.get(policy_id)
        if policy is None:
            raise errors.policy_not_found()
        return policy

    def parent_of(self, child: str) -> str:
        if child in self.ous:
            return str(self.ous[child]["parent"])
        if child in self.accounts:
            return str(self.accounts[child]["parent"])
        raise errors.child_not_found()

    def is_parent(self, parent: str) -> bool:
        return parent == self.root_id or parent in self.ous

    def chain(self, target: str) -> list[str]:
        """The root, then each OU down to ``target`` (an OU or an account), then it."""
        path = [target]
        node = target
        while node != self.root_id:
            node = self.parent_of(node)
            path.append(node)
        return list(reversed(path))

    def depth(self, ou_id: str) -> int:
        return len(self.chain(ou_id)) - 1

    def path(self, target: str) -> str:
        """aws:PrincipalOrgPaths / aws:ResourceOrgPaths: ``o-…/r-…/ou-…/``, down to the
        account's parent (an account's path is its parent's)."""
        chain = self.chain(target)
        if target in self.accounts:
            chain = chain[:-1]
        return "/".join([self.id, *chain]) + "/"

    def names(self, target: str) -> list[str]:
        """The names of the OUs from the root down to an OU, or to an account's parent."""
        chain = self.chain(target)[1:]
        if target in self.accounts:
            chain = chain[:-1]
        return [self.ous[ou]["name"] for ou in chain]

    def names_path(self, target: str) -> str:
        """Where an OU or an account sits, by names from the root: ``Root/Workloads/Prod``."""
        return "/".join([self.root["name"], *self.names(target)])

    def is_target(self, target: str) -> bool:
        return target == self.root_id or target in self.ous or target in self.accounts

    def attached_of(self, target: str, policy_type: str | None = None) -> list[str]:
        found = self.attached.get(target, [])
        if policy_type is None:
            return list(found)
        return [p for p in found if self.policy(p)["type"] == policy_type]

    def targets_of(self, policy_id: str) -> list[str]:
        return [t for t, found in self.attached.items() if policy_id in found]

    def attach_defaults(self, target: str) -> None:
        """What AWS attaches to a new OU or account: FullAWSAccess and RCPFullAWSAccess,
        where their policy types are enabled."""
        for policy_type, policy_id in ((SCP, FULL_ACCESS), (RCP, RCP_FULL_ACCESS)):
            if self.enabled(policy_type):
                found = self.attached.setdefault(target, [])
                if policy_id not in found:
                    found.append(policy_id)

    def drop_target(self, target: str) -> None:
        self.attached.pop(target, None)
        self.data["tags"].pop(target, None)

    def tags(self, resource: str) -> list[dict[str, str]]:
        found: list[dict[str, str]] = self.data["tags"].get(resource, [])
        return found

    def set_tags(self, resource: str, tags: list[dict[str, str]]) -> None:
        if tags:
            self.data["tags"][resource] = tags
        else:
            self.data["tags"].pop(resource, None)

    # rendering
    def wire(self) -> dict[str, Any]:
        email = self.accounts[self.management].get("email")
        return {
            "Id": self.id, "Arn": self.arn, "FeatureSet": self.data["feature_set"],
            "MasterAccountArn": self.account_arn(self.management),
            "MasterAccountId": self.management, "MasterAccountEmail": email,
            # Deprecated by AWS, still sent: the SCP type's availability.
            "AvailablePolicyTypes": [{"Type": SCP, "Status": "ENABLED"}],
        }

    def root_wire(self) -> dict[str, Any]:
        return {"Id": self.root_id, "Arn": self.root_arn(), "Name": self.root["name"],
                "PolicyTypes": [{"Type": t, "Status": s}
                                for t, s in sorted(self.root["types"].items())]}

    def ou_wire(self, ou_id: str) -> dict[str, Any]:
        return {"Id": ou_id, "Arn": self.ou_arn(ou_id), "Name": self.ous[ou_id]["name"]}

    def account_wire(self, account: str) -> dict[str, Any]:
        member = self.accounts[account]
        return {
            "Id": account, "Arn": self.account_arn(account), "Email": member.get("email"),
            "Name": member["name"], "Status": "ACTIVE", "State": "ACTIVE",
            "JoinedMethod": member["method"], "JoinedTimestamp": when(member["joined"]),
        }

    def policy_summary(self, policy_id: str) -> dict[str, Any]:
        policy = self.policy(policy_id)
        return {"Id": policy_id, "Arn": self.policy_arn(policy_id), "Name": policy["name"],
                "Description": policy.get("description", ""), "Type": policy["type"],
                "AwsManaged": policy_id in AWS_MANAGED}

    def target_wire(self, target: str) -> dict[str, Any]:
        if target == self.root_id:
            kind, name = "ROOT", self.root["name"]
        elif target in self.ous:
            kind, name = "ORGANIZATIONAL_UNIT", self.ous[target]["name"]
        else:
            kind, name = "ACCOUNT", self.accounts[target]["name"]
        return {"TargetId": target, "Arn": self.target_arn(target), "Name": name, "Type": kind}


@dataclass(frozen=True)
class Standing:
    """What authorization needs of an account's place in an organization."""

    org_id: str
    management: str
    path: str  # aws:PrincipalOrgPaths / aws:ResourceOrgPaths
    scp: tuple[tuple[tuple[str, str], ...], ...] | None  # levels of (policy ARN, content)
    rcp: tuple[tuple[tuple[str, str], ...], ...] | None
    root_features: tuple[str, ...] = ()

    def is_management(self, account: str) -> bool:
        return account == self.management


def standing_of(org: Org, account: str) -> Standing:
    chain = org.chain(account)

    def levels(policy_type: str) -> tuple[tuple[tuple[str, str], ...], ...] | None:
        if account == org.management or not org.enabled(policy_type):
            return None
        return tuple(
            tuple((org.policy_arn(p), org.policy(p)["content"])
                  for p in org.attached_of(target, policy_type))
            for target in chain)

    return Standing(org.id, org.management, org.path(account), levels(SCP), levels(RCP),
                    tuple(org.data.get("root_features", [])))



class ServiceAccessNotEnabled(AwsError):
    code = "ServiceAccessNotEnabledException"
    status = 400
    sender_fault = True

    def __init__(self) -> None:
        super().__init__("The request failed because the service access for IAM in "
                         "Organizations is not enabled: call EnableAWSServiceAccess with "
                         f"the service principal {IAM_PRINCIPAL} first.")



def supported(policy_type: str) -> None:
    if policy_type not in POLICY_TYPES:
        raise OrgError("PolicyTypeNotAvailableForOrganizationException",
                       f"The broker's organizations have the policy types {SCP} and {RCP}; "
                       f"{policy_type} has no meaning here.")


def check_resource(org: Org, resource: str) -> None:
    if not (org.is_target(resource) or resource in org.policies):
        raise errors.target_not_found()


def check_tags(tags: list[dict[str, str]]) -> None:
    keys = [t["Key"] for t in tags]
    if len(set(keys)) != len(keys):
        raise invalid_input("You provided the same tag key twice.", "DUPLICATE_TAG_KEY")
    if any(k.lower().startswith("aws:") for k in keys):
        raise invalid_input("Tag keys with the prefix aws: are reserved.",
                            "INVALID_SYSTEM_TAGS_PARAMETER")
    if len(keys) > MAX_TAGS:
        raise constraint(f"You can attach at most {MAX_TAGS} tags to a resource.",
                         "MAX_TAG_LIMIT_EXCEEDED")


def check_content(content: str, policy_type: str) -> None:
    """An SCP's or RCP's document: at most 5,120 characters, the grammar of its kind (no
    Principal in an SCP; Principal "*" only, no NotAction, and Deny only in an RCP)."""
    if len(content) > MAX_POLICY_SIZE:
        raise constraint(f"The policy is larger than the maximum size of {MAX_POLICY_SIZE} "
                         "characters.", "POLICY_CONTENT_LIMIT_EXCEEDED")
    try:
        policy = parse(content, KIND_OF[policy_type])
    except MalformedPolicyDocument as exc:
        raise OrgError("MalformedPolicyDocumentException", exc.message) from None
    if policy_type == RCP and any(s.effect.value == "Allow" for s in policy.statements):
        raise OrgError("MalformedPolicyDocumentException",
                       "A resource control policy can only deny: the effect Allow is "
                       "supported only in RCPFullAWSAccess.")
