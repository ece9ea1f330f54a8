"""What a run is on disk: its folder, resuming, atomic files, logger set-up.

Imported by the CLI, callbacks, datamodules and scripts alike; it imports none of them.
"""
