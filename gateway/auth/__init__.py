"""Digest authentication: credentials in the registry, the checks, and the policy of
which requests must authenticate."""
