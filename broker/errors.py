"""The broker's error tree.

Errors that cross a boundary are classes; raising one is enough, the interface's single handler
renders it in that interface's own format (AWS XML for the Query API, one line for the CLI).

    BrokerError                 anything the broker raises on purpose
     ├── ConfigError            a setting, file or flag that cannot be used; start-up stops
     ├── KeyringError           a keyring file that cannot be read, or a key that cannot be used
     │    └── SealError         a sealed blob that does not open (tampered, truncated, retired key)
     ├── StoreError             a store refused or failed an operation
     │    ├── NotFound          the record does not exist
     │    ├── AlreadyExists     a record with that key (or unique lookup) exists
     │    ├── QuotaExceeded     the parent already holds as many children as allowed
     │    ├── Conflict          the record still has children, or changed under us
     │    └── StoreUnavailable  the backend cannot be reached; callers fail closed
     ├── MailError              (broker.mail) an e-mail the SMTP server did not take
     └── AwsError               (broker.aws.errors) an error with an AWS wire code and status
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""


class ConfigError(BrokerError):
    """A setting, file or flag that cannot be used. The message names the key and the fault."""


class KeyringError(BrokerError):
    """A keyring that cannot be loaded or saved, or an operation the keyring refuses."""


class SealError(KeyringError):
    """A sealed blob that does not open: tampered, truncated, bound to other data, or retired."""


class StoreError(BrokerError):
    """A store refused or failed an operation."""


class NotFound(StoreError):
    """The record does not exist."""


class AlreadyExists(StoreError):
    """A record with the same key, or the same unique lookup value, exists."""


class QuotaExceeded(StoreError):
    """The parent record already has as many children of that kind as allowed."""


class Conflict(StoreError):
    """The record cannot be changed as asked: it still has children, or it changed meanwhile."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or did not answer. Requests that need it are refused."""
