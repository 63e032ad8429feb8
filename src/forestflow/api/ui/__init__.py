"""The dashboard at `/ui`: server-rendered HTML that htmx keeps up to date (docs/dashboard.md)."""
