"""The kernel: settings, database access, identity and shared constants. Imports nothing from Interlock."""
