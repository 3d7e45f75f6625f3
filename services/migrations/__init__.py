"""Alembic migrations of every service's schema."""
