"""Prices: the price table in memory, its rules (what a request costs), and seeding from genai-prices."""
