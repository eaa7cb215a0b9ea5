"""Switchyard deploy: ship a compiled environment to its host and restart only what changed.

`python deploy.py ENV` is the entry point (`deployer.cli`). The pieces:
`bundle` (validate + compile in memory), `hosts` (one interface for SSH and this machine),
`commands` (docker / compose argument lists), `state` (what runs on the host), `plan`
(unchanged / create / restart / rebuild per service, with reasons), `steps` (small frozen
objects with `describe()` and `run()`), `flow` (the deploy, rollback, status and history).
"""
