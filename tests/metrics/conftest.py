"""The metrics tests use the session cluster from tests/conftest.py."""
