"""Placeholder until this subpackage is written."""
