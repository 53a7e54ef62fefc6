"""Stands in for the app's ``config`` package in the bench's ceiling stack (see ../../compose.yaml)."""
