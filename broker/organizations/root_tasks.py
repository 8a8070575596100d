"""Centralized root access: AWS's five task policies, which scope an AssumeRoot session.

``sts:AssumeRoot`` gives a principal of the management account a short session as the root
user of a member account, narrowed to one of these policies
(``arn:aws:iam::aws:policy/root-task/NAME``). The IAM ones are AWS's documents; the S3 and
SQS ones name services the broker does not have, so AssumeRoot refuses them (docs/
organizations.md).
"""

from __future__ import annotations

import json

PREFIX = "arn:aws:iam::aws:policy/root-task/"


def _document(*actions: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(actions), "Resource": "*"}]})


TASKS: dict[str, str] = {
    PREFIX + "IAMAuditRootUserCredentials": _document(
        "iam:GetAccountSummary", "iam:GetAccessKeyLastUsed", "iam:GetLoginProfile",
        "iam:GetUser", "iam:ListAccessKeys", "iam:ListMFADevices", "iam:ListMFADeviceTags",
        "iam:ListSigningCertificates"),
    PREFIX + "IAMCreateRootUserPassword": _document(
        "iam:CreateLoginProfile", "iam:GetLoginProfile"),
    PREFIX + "IAMDeleteRootUserCredentials": _document(
        "iam:DeactivateMFADevice", "iam:DeleteAccessKey", "iam:DeleteLoginProfile",
        "iam:DeleteSigningCertificate", "iam:DeleteVirtualMFADevice", "iam:GetAccessKeyLastUsed",
        "iam:GetLoginProfile", "iam:GetUser", "iam:ListAccessKeys", "iam:ListMFADevices",
        "iam:ListSigningCertificates"),
}
# AWS's other two task policies: meaningful only where there are S3 buckets and SQS queues.
WITHOUT_MEANING = frozenset({PREFIX + "S3UnlockBucketPolicy", PREFIX + "SQSUnlockQueuePolicy"})
DEFAULT_SECONDS = 900
