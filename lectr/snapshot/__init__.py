"""The snapshot: everything the hot path reads (orgs, key hashes, Azure targets), loaded from Postgres and swapped whole."""
