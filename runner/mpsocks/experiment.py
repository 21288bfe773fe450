"""``mpsocks-run lab experiment net-neutrality``: the seed's study from nothing, in three plays.

1. ``up``: the study's lab (uplink 0 behind the optimizer) and a proxy stack on it with a namespace
   guest, as ``mpsocks-run up --lab NAME --backend netns`` makes them (an existing lab of that name is
   used as it is, if its uplink 0 has the optimizer);
2. the study, ``playbooks/net_neutrality.yml`` (module ``net_neutrality``), into the output folder;
3. ``down``: what step 1 made, unless ``--keep``.
"""

from __future__ import annotations

from pathlib import Path

from mpsocks import lab, stack
from mpsocks.playbook_run import Play, data_file

EXPERIMENTS = ("net-neutrality",)
#: Where the project keeps the study's captures and report (its own sample traces).
DEFAULT_OUTPUT = "traces/net_neutrality"
DEFAULT_LAB = "mpsnn"
#: The study's lab: two 10 Mbit/s uplinks, the optimizer on uplink 0 giving the connections it terminates
#: 30 Mbit/s (a mobile ISP's proxy favours what it can see), 12 hops to the servers.
RATES = [10.0, 10.0]
OPTIMIZER_RATE = 30.0
HOPS = 12


def lab_settings(name: str) -> dict:
    return lab.lab_settings(name, RATES, {0: "optimizer"}, OPTIMIZER_RATE, HOPS, host_netns=True)


def plays(name: str, output: Path) -> tuple[Play, Play, Play]:
    """The up, study and down plays of the study on lab NAME, writing into OUTPUT; raises MpsocksError
    when lab NAME is up without the optimizer on uplink 0, or another stack is up."""
    settings = lab_settings(name)
    built, running = stack.lab_stack(name, [], backend="netns")
    if running:
        uplinks = lab.status(name).get("uplinks") or [{}]
        if uplinks[0].get("middlebox") != "optimizer":
            raise lab.MpsocksError(f"lab {name} is up without the optimizer on uplink 0: give another "
                                   f"--name, or mpsocks-run lab down --name {name} first")
    recorded = stack.load()
    if recorded is not None and recorded.guest != built.guest and stack.is_up(recorded):
        raise lab.MpsocksError(f"another stack is up (guest {recorded.guest}): mpsocks-run down first")
    up = Play(data_file("playbooks/boot_socks.yml"), built.inventory(),
              built.extravars(None if running else settings | {"host_netns": True}), target="stack",
              before_run=lambda: stack.save(built))
    study = Play(data_file("playbooks/net_neutrality.yml"), data_file("inventory/localhost.yml"),
                 {"mpsocks_lab_name": name, "mpsocks_net_neutrality_output": str(output.absolute()),
                  "mpsocks_net_neutrality_force": True}, target=f"lab-{name}")
    down = Play(data_file("playbooks/teardown.yml"), built.inventory(),
                built.extravars({"name": name} if not running else None), target="stack",
                after_success=stack.forget)
    return up, study, down
