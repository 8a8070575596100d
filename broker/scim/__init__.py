"""IAM Identity Center's SCIM 2.0 server (RFC 7643, RFC 7644): what external identity
providers provision an instance's identity store through (AWS's "automatic provisioning").

``tokens`` (the bearer access tokens), ``filters`` (RFC 7644 §3.4.2.2), ``patch`` (§3.5.2),
``resources`` (the User and Group schemas and their mapping to the identity store's
attributes), ``server`` (the use cases the web layer calls), ``errors``.
"""
