"""Subcommands of the `dualenc` command line, one module each."""
