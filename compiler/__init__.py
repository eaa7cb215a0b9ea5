"""Switchyard's compiler: gateway.yaml -> validated, resolved, rendered artifacts.

load (YAML with positions) -> validate (shape + semantic checks) -> resolve (per
environment) -> render ({path: text}). Pure functions; only `compiler.cli` does I/O.
"""

__version__ = "0.2.0"
