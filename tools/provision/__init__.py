"""``fedge provision``: keys, certificates and a locked-down Mosquitto config for a federation.

- :mod:`~tools.provision.command`: the command, the keys and certificates it writes.
- :mod:`~tools.provision.files`: the plan and the text files it renders (Mosquitto config,
  ACL, password hashes, README.txt).
"""

from tools.provision.command import add_parser, check, plan_from, provision, run
from tools.provision.files import Plan, password_hash, render_acl, render_config, render_readme

__all__ = [
    "Plan", "add_parser", "check", "password_hash", "plan_from", "provision", "render_acl",
    "render_config", "render_readme", "run",
]
