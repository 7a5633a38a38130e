"""The hot path: Auth · Detect · Route · Forward · Log.

Nothing here imports the database, the API or the analysis code; the only thing it hands to
the cold path is the event it appends to the ring buffer. ``tests/unit/test_hot_path_imports.py``
holds that line.
"""
