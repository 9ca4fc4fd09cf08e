"""The DuckDB warehouse: schema, snapshot loads, history. Every write goes through here."""
