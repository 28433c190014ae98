"""The store: SQL and nothing else. Migrations, tier detection and the batch writer."""
