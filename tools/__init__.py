"""Tooling around the Pulumi program: stack files, passphrase secrets, offline preview."""
