"""The mpsocks.mptcp.netns connection plugin: a namespace as an inventory host."""

import json

from mpsocks_testlib import ansible_playbook, netns_inventory, sh

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: command sees the namespace's links only
      ansible.builtin.command: ip -j link show
      register: links
      changed_when: false
    - name: copy
      ansible.builtin.copy:
        content: "copied into {{ inventory_hostname }}\\n"
        dest: "{{ workdir }}/copied.txt"
    - name: template
      ansible.builtin.template:
        src: "{{ workdir }}/t.j2"
        dest: "{{ workdir }}/templated.txt"
    - name: a collection module acts in the namespace without a netns option
      mpsocks.mptcp.tap:
        config:
          - name: mptcp0
            addresses: [10.66.6.1/24]
    - name: record which of the machine's own interfaces the command saw
      ansible.builtin.copy:
        content: "{{ links.stdout | from_json | map(attribute='ifname') | select('in', own) | list }}"
        dest: "{{ workdir }}/seen.json"
"""


def test_tasks_run_inside_the_namespace(netns, tmp_path):
    (tmp_path / "t.j2").write_text("host={{ inventory_hostname }}\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    inventory = netns_inventory(tmp_path / "inv.json", netns)

    own = [link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show")) if link["ifname"] != "lo"]
    extravars = {"workdir": str(tmp_path), "own": own}
    rc, output, recap = ansible_playbook(playbook, inventory, extravars=extravars)
    assert rc == 0, output
    assert recap[netns]["changed"] == 4 and recap[netns]["failed"] == 0

    assert own and json.loads((tmp_path / "seen.json").read_text()) == [], "command ran outside the netns"
    assert (tmp_path / "copied.txt").read_text() == f"copied into {netns}\n"
    assert (tmp_path / "templated.txt").read_text() == f"host={netns}\n"
    assert "10.66.6.1/24" in sh("ip", "-o", "addr", "show", "mptcp0", netns=netns)
    assert "mptcp0" not in sh("ip", "-o", "link", "show")

    rc, output, recap = ansible_playbook(playbook, inventory, extravars=extravars)
    assert rc == 0 and recap[netns]["changed"] == 0, output


def test_missing_namespace_is_unreachable_with_a_clear_message(tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    inventory = netns_inventory(tmp_path / "inv.json", "mpsocks-no-such-netns")
    rc, output, recap = ansible_playbook(playbook, inventory)
    assert rc == 4 and recap["mpsocks-no-such-netns"]["unreachable"] == 1
    assert "network namespace 'mpsocks-no-such-netns' does not exist" in output
