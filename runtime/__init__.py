"""Switchyard's gateway runtime (FastAPI + uvicorn).

It reads ONLY the compiled runtime config (`runtime.json`, see docs/runtime-config.md) and
never imports `compiler`. The service itself is built by the runtime issue; the compiled
Dockerfile and compose file already start it as
`python -m runtime serve --config /etc/switchyard/runtime.json`.
"""
