"""Switchyard deploy: ship a compiled environment to its host and restart only what changed.

`python deploy.py ENV` is the entry point (`deployer.cli`). The pieces:
`bundle` (validate + compile in memory), `hosts` (one interface for SSH and this machine),
`commands` (docker / compose argument lists), `state` (what runs on the host), `plan`
(`DeployPlan`: unchanged / create / replace / rebuild / reload / recreate per service, with
reasons), `activate` (`release_steps`: the one ordered step list that `--plan` prints and a
deploy or rollback runs), `steps` (small frozen objects with `describe()` and `run()`),
`secrets_env` (the secrets file), `history` (history.jsonl, typed), `flow` (the deploy,
rollback, status and history commands). The manifest is `compiler.manifest.Manifest`.
"""
