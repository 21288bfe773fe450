"""Endpoint flags, the mptcp_pm message layout and the pyroute2 import they use (no kernel needed)."""

import os
import struct
import subprocess
import sys
import time

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError
from ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_pm import (
    CMD_ADD_ADDR,
    MptcpPmMsg,
    endpoint_attr,
    flag_bits,
    flag_names,
)
from mpsocks_testlib import collections_root

NLA_F_NESTED = 0x8000


@pytest.mark.parametrize("names, bits", [
    ([], 0),
    (["signal"], 1),
    (["subflow"], 2),
    (["backup"], 4),
    (["fullmesh"], 8),
    (["subflow", "backup", "fullmesh"], 14),
    (["signal", "subflow", "backup"], 7),
])
def test_names_and_kernel_bits_round_trip(names, bits):
    assert flag_bits(names) == bits
    assert flag_names(bits) == sorted(names)


def test_kernel_only_bits_are_shown_not_hidden():
    assert flag_names(2 | 16) == ["implicit", "subflow"]
    assert flag_names(2 | 64) == ["0x40", "subflow"]


def test_signal_with_fullmesh_is_refused_before_the_kernel_sees_it():
    with pytest.raises(MpsocksError, match=r"^flags: signal and fullmesh cannot be combined"):
        flag_bits(["signal", "fullmesh"])


def test_unknown_flag_names_the_input():
    with pytest.raises(MpsocksError, match=r"^flags: unknown flag\(s\) implicit, nomesh; choose from"):
        flag_bits(["subflow", "nomesh", "implicit"])


def _encoded(**endpoint):
    msg = MptcpPmMsg()
    msg["cmd"] = CMD_ADD_ADDR
    msg["version"] = 1
    msg["attrs"] = [endpoint_attr(**endpoint)]
    msg.encode()
    return msg.data


def test_interface_index_is_sent_as_s32():
    """The regression: pyroute2 0.9.7 types IF_IDX as hex and the dev binding is lost."""
    data = _encoded(address="10.199.0.2", endpoint_id=3, flags=2, ifindex=7)
    assert struct.pack("=HHi", 8, 7, 7) in data  # nla_len 8, MPTCP_PM_ADDR_ATTR_IF_IDX, s32 7
    decoded = MptcpPmMsg(data)
    decoded.decode()
    addr = decoded.get_attr("MPTCP_PM_ATTR_ADDR")
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_IF_IDX") == 7
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR4") == "10.199.0.2"
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_FAMILY") == 2
    # The address nest carries NLA_F_NESTED, as the kernel's policy expects.
    assert struct.unpack_from("=H", data, 20 + 2)[0] == 1 | NLA_F_NESTED


def test_ipv6_and_left_out_attributes():
    data = _encoded(address="fd66:0::1", port=8443)
    decoded = MptcpPmMsg(data)
    decoded.decode()
    addr = decoded.get_attr("MPTCP_PM_ATTR_ADDR")
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR6") == "fd66::1"
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_FAMILY") == 10
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_PORT") == 8443
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_IF_IDX") is None
    assert addr.get_attr("MPTCP_PM_ADDR_ATTR_ID") is None


RTNL = "ansible_collections.mpsocks.mptcp.plugins.module_utils.rtnl"
#: Run in a fresh interpreter: what importing the modules' netlink helpers loads of pyroute2.
IMPORT_CHECK = f"""
import sys, importlib
rtnl = importlib.import_module("{RTNL}")
importlib.import_module("ansible_collections.mpsocks.mptcp.plugins.module_utils.mptcp_pm")
print(*(name in sys.modules for name in ("pyroute2.ipdb", "pyroute2.ndb", "pyroute2.conntrack")))
from pyroute2 import IPRoute, NDB, config
print(IPRoute is rtnl.IPRoute, NDB.__name__, config.__name__)
"""


def _python(code):
    """Run CODE in a fresh interpreter that finds the collection; (stdout lines, seconds taken)."""
    env = dict(os.environ, PYTHONPATH=str(collections_root()))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return proc.stdout.splitlines(), time.perf_counter() - started


def test_pyroute2_loads_only_what_the_modules_use_and_stays_whole_for_others():
    lines, _ = _python(IMPORT_CHECK)
    # pyroute2's __init__ (which imports ipdb, ndb, conntrack and every other family) did not run ...
    assert lines[0] == "False False False"
    # ... yet code asking pyroute2 for its names still gets them, the same classes.
    assert lines[1] == "True NDB pyroute2.config"

    # What a module call pays for pyroute2 (figures, not an assertion: the machine may be busy).
    base = "import ansible.module_utils.basic"
    cases = {"ansible basic only": base,
             "+ from pyroute2 import IPRoute": base + "; from pyroute2 import IPRoute",
             "+ module_utils.rtnl": base + "; import " + RTNL}
    best = {name: min(_python(code)[1] for _ in range(5)) for name, code in cases.items()}
    for name, seconds in best.items():
        print(f"{name:32s} best of 5: {seconds * 1000:4.0f} ms")
