"""mpsocks: the mpsocks-run runner for the mpsocks.mptcp Ansible collection's playbooks."""
