"""IAM actions of the Query protocol, one module per noun; every action is authorized (by
broker.authz) before its use case runs, against the resource ARN AWS uses for it."""

from __future__ import annotations

from broker.authz import Authorizer
from broker.aws.query import Operation
from broker.iam.api import account, groups, mfa, policies, providers, roles, simulate, users
from broker.iam.api.common import IamContext
from broker.iam.lastused import LastUsedRecorder
from broker.iam.service import IamService


def operations(iam: IamService, authz: Authorizer,
               last_used: LastUsedRecorder) -> list[Operation]:
    ctx = IamContext(iam, authz, last_used)
    modules = (users, groups, roles, policies, account, simulate, providers, mfa)
    return [op for module in modules for op in module.operations(ctx)]
