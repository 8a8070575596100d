"""The broker: a self-hosted identity broker that speaks AWS's STS, IAM and SigV4 protocols."""

__version__ = "0.1.0"
