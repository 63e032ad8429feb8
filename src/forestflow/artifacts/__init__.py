"""Fetching model artifacts into the local cache, one fetcher per storage protocol."""
