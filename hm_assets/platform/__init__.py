"""What every stage runs on: storage, settings, weeks, SQL, shards and fan-out, guards, progress.

Inside this package ``import platform`` still means the standard library (absolute imports).
"""
