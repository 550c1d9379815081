"""Mitogen's linear strategy, for the tests' docker hosts only.

Molecule's configuration names this directory (ANSIBLE_STRATEGY_PLUGINS) and
the strategy (ANSIBLE_STRATEGY), so converge, idempotence and every playbook a
test runs keep one Python interpreter per host for the whole run instead of
starting one per task; production runs never load it. Mitogen documents its
strategies as a directory inside its package; this file names that strategy
here so the path does not depend on where the virtualenv is.

Only the ``docker`` connection (harness/ansible_plugins/vars/nsenter_hosts.py
gives it to Molecule's running hosts) is taken over. Everything else keeps
Ansible's own connection: on this machine Mitogen's ``local`` context dies at
its start ("EOF on stream", every interpreter it tries), which breaks
Molecule's create and destroy and any task delegated to the controller.
"""

import ansible_mitogen.strategy
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

ansible_mitogen.strategy.REDIRECTED_CONNECTION_PLUGINS = ("docker",)

__all__ = ["StrategyModule"]
