"""Test-only protos and their generated code."""
