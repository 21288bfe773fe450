"""The config drive's text (filter mpsocks.mptcp.config_drive): its steps checked, its code complete."""

import json
import re

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.config_drive import code_files, drive_text
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError


def test_the_code_holds_what_the_modules_import_and_no_controller_code():
    files = code_files(["daemon", "redirect"])
    for path in ("ansible_collections/mpsocks/mptcp/plugins/modules/daemon.py",
                 "ansible_collections/mpsocks/mptcp/plugins/modules/redirect.py",
                 "ansible_collections/mpsocks/mptcp/plugins/module_utils/nft.py",
                 "ansible_collections/mpsocks/mptcp/plugins/module_utils/config_drive.py",
                 "ansible_collections/mpsocks/__init__.py",
                 "ansible/module_utils/basic.py",
                 "ansible/module_utils/distro/_distro.py"):
        assert path in files, path
    assert files["ansible/__init__.py"] == ""
    assert not [path for path in files if path.startswith(("ansible/plugins", "ansible/executor"))]
    assert "ansible_collections/mpsocks/mptcp/plugins/modules/interface.py" not in files


def test_the_text_is_whole_sectors_of_json():
    forward = {"config": [{"name": "net.ipv4.ip_forward", "value": "1"}]}
    text = drive_text([{"module": "sysctl", "args": forward},
                       {"file": {"path": "/etc/resolv.conf", "content": "nameserver 192.0.2.53\n"}}])
    assert len(text.encode()) % 512 == 0
    assert json.loads(text)["steps"][1]["file"]["path"] == "/etc/resolv.conf"


@pytest.mark.parametrize("steps, message", [
    ({"module": "sysctl"}, "config drive: a list of steps is needed"),
    (["sysctl"], "steps[0]: a step is a dict"),
    ([{"module": "no_such_module"}], "steps[0]: module 'no_such_module' is not a module of mpsocks.mptcp"),
    ([{"module": "../modules/sysctl"}], "is not a module of mpsocks.mptcp"),
    ([{"module": "sysctl", "args": ["x"]}], "steps[0]: args of sysctl must be a dict"),
    ([{"file": {"path": "etc/x", "content": ""}}], "steps[0]: file needs an absolute path"),
    ([{"file": {"path": "/etc/x", "content": "", "mode": "rw"}}], "file mode 'rw' is not an octal mode"),
])
def test_bad_steps_are_named(steps, message):
    with pytest.raises(MpsocksError, match=re.escape(message)):
        drive_text(steps)
