"""Sign-in: turning verified identities into browser sessions (SAML sign-in, console)."""
