"""Identity providers: evidence from outside (SAML responses, OIDC tokens) → a verified identity."""
