"""parallelsync: parallel, consistent PostgreSQL -> MongoDB full sync with change capture."""

__version__ = "0.1.0"
