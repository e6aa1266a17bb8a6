"""Policies as data: the packaged YAML files live beside this module."""

from pathlib import Path

# The packaged policy files; `INTERLOCK_POLICY_DIR` points a deployment at its own copy.
POLICY_DIR = Path(__file__).resolve().parent
