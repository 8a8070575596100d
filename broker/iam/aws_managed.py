"""AWS managed policies the broker knows: the ones scripts and tutorials attach by ARN.

Each is AWS's own document for that policy (``arn:aws:iam::aws:policy/NAME``), so that
``AttachRolePolicy --policy-arn arn:aws:iam::aws:policy/AdministratorAccess`` means here what it
means on AWS. They cannot be changed or deleted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from broker.iam.entities import ManagedPolicy, PolicyVersion

AWS = "aws"
_CREATED = datetime(2015, 2, 6, 18, 39, 46, tzinfo=UTC)


def _policy(name: str, policy_id: str, description: str, statements: list[dict[str, object]],
            path: str = "/") -> ManagedPolicy:
    document = json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=4)
    return ManagedPolicy(
        account_id=AWS, name=name, path=path, policy_id=policy_id, created=_CREATED,
        updated=_CREATED, default_version="v1",
        versions=(PolicyVersion("v1", document, _CREATED),), description=description,
    )


CATALOG: dict[str, ManagedPolicy] = {
    p.arn: p
    for p in (
        _policy("AdministratorAccess", "ANPAIWMBCKSKIEE64ZLYK",
                "Provides full access to AWS services and resources.",
                [{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
        _policy("IAMFullAccess", "ANPAI7XKCFMBPM3QQRRVQ",
                "Provides full access to IAM via the AWS Management Console.",
                [{"Effect": "Allow", "Action": ["iam:*", "organizations:DescribeAccount",
                                                "organizations:DescribeOrganization",
                                                "organizations:DescribeOrganizationalUnit",
                                                "organizations:DescribePolicy",
                                                "organizations:ListChildren",
                                                "organizations:ListParents",
                                                "organizations:ListPoliciesForTarget",
                                                "organizations:ListRoots",
                                                "organizations:ListPolicies",
                                                "organizations:ListTargetsForPolicy"],
                  "Resource": "*"}]),
        _policy("IAMReadOnlyAccess", "ANPAJKSO7NDY4T57MWDSQ",
                "Provides read only access to IAM via the AWS Management Console.",
                [{"Effect": "Allow", "Action": ["iam:GenerateCredentialReport",
                                                "iam:GenerateServiceLastAccessedDetails",
                                                "iam:Get*", "iam:List*",
                                                "iam:SimulateCustomPolicy",
                                                "iam:SimulatePrincipalPolicy"],
                  "Resource": "*"}]),
        _policy("IAMUserChangePassword", "ANPAJ4L4MM2A7QIEB56MS",
                "Provides the ability for an IAM user to change their own password.",
                [{"Effect": "Allow", "Action": ["iam:ChangePassword"],
                  "Resource": ["arn:aws:iam::*:user/${aws:username}"]},
                 {"Effect": "Allow", "Action": ["iam:GetAccountPasswordPolicy"],
                  "Resource": "*"}]),
    )
}
