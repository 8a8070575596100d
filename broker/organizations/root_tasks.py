"""Centralized root access: AWS's five task policies, which scope an AssumeRoot session.

``sts:AssumeRoot`` gives a principal of the management account a short session as the root
user of a member account, narrowed to one of these policies
(``arn:aws:iam::aws:policy/root-task/NAME``). The audit and delete tasks allow what AWS's documents
allow, and authz.py holds their sessions to the root user's own credentials; the password,
S3 and SQS tasks have no meaning here (no email recovery, no buckets, no queues), so AssumeRoot
refuses them (docs/organizations.md).
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
    PREFIX + "IAMDeleteRootUserCredentials": _document(
        "iam:DeactivateMFADevice", "iam:DeleteAccessKey", "iam:DeleteLoginProfile",
        "iam:DeleteSigningCertificate", "iam:DeleteVirtualMFADevice", "iam:GetAccessKeyLastUsed",
        "iam:GetLoginProfile", "iam:GetUser", "iam:ListAccessKeys", "iam:ListMFADevices",
        "iam:ListSigningCertificates"),
}
# AWS's other task policies, and why they have no meaning here.
WITHOUT_MEANING = {
    # On AWS it lets the root user's email address recover a password (CreateLoginProfile
    # with no password); the broker sends no email, and letting the management account choose
    # the member root's password would hand it the member's whole root user.
    PREFIX + "IAMCreateRootUserPassword": "the broker has no email password recovery for root "
                                          "users",
    PREFIX + "S3UnlockBucketPolicy": "the broker has no S3 buckets",
    PREFIX + "SQSUnlockQueuePolicy": "the broker has no SQS queues",
}
DEFAULT_SECONDS = 900
