"""Workflows: each job (fit, test, predict, reproduce, demo) runs the stages in an explicit order.

data -> model -> training -> scoring -> detector -> evaluation -> reporting / export; nothing
happens in hidden callbacks. `trd.api` re-exports these functions; the CLI calls them.
"""
