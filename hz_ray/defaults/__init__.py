"""Embedded default configs (package data)."""
