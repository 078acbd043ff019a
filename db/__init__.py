"""Persistence for pacs-triage: typed SQLAlchemy 2.0 models, query functions and migrations.

This package imports none of the services; they import it.
"""
