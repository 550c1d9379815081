"""Loaded by every pytest run whose rootdir is this repository (tests/unit,
app/tests, tests/cd, the Molecule scenarios' testinfra runs)."""

# No silent skips: in CI a skip not on harness/skips.py's list fails the run.
pytest_plugins = ["harness.skips"]
