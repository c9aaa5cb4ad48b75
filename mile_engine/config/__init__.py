"""Typed, validated settings: one dataclass, one loader, one set of error messages.

- `schema`: the `Settings` dataclass, each field with its group, doc and limits.
- `validation`: each value checked against its field's limits, then the combinations.
- `loader`: TOML files and `--set` overrides, command line > file > defaults.
- `render`: the settings as a commented `mile.toml`.
"""
