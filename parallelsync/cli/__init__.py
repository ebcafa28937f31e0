"""The command line: parse, dispatch, print; one error handler (main.py)."""
