"""The contract every module shares (module_utils/declarative.py), on objects kept in a dict.

Issue 7 #14: any exception becomes one line naming the object (the traceback goes with it for -vvv),
and a restore that fails after a failed change is reported, not swallowed. A list is validated
whole before anything changes.
"""

from __future__ import annotations

import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.declarative import KernelObject, run_module
from ansible_collections.mpsocks.mptcp.plugins.module_utils.errors import MpsocksError

KERNEL: dict[str, int] = {}


class Thing(KernelObject):
    """A named number in KERNEL; ``breaks`` makes apply fail with that exception, ``sticks`` its restore."""

    kind = "thing"

    def label(self):
        return f"thing {self.params['name']}"

    def validate(self):
        if not str(self.params["name"]).isalpha():
            raise MpsocksError(f"name: {self.params['name']!r} is not a word")
        self.restoring = False

    def read(self):
        value = KERNEL.get(self.params["name"])
        return None if value is None else {"name": self.params["name"], "value": value}

    def wanted(self, current):
        return {"name": self.params["name"], "value": self.params["value"]}

    def apply(self, current, wanted):
        broken = self.params.get("breaks")
        if broken and (not self.restoring or self.params.get("sticks")):
            KERNEL[self.params["name"]] = -1  # half way
            self.restoring = True
            raise broken
        if wanted is None:
            KERNEL.pop(self.params["name"], None)
        else:
            KERNEL[self.params["name"]] = wanted["value"]

    def lock_keys(self):
        return []


class Module:
    """What run_module uses of an AnsibleModule: params, check_mode, exit_json and fail_json."""

    def __init__(self, config, check_mode=False):
        self.params = {"config": config, "state": "present", "netns": None}
        self.check_mode = check_mode
        self.result = None

    def exit_json(self, **result):
        self.result = result
        raise SystemExit(0)

    def fail_json(self, **result):
        self.result = dict(result, failed=True)
        raise SystemExit(1)


def run(config, check_mode=False):
    module = Module([dict({"state": None, "netns": None}, **item) for item in config], check_mode)
    with pytest.raises(SystemExit):
        run_module(module, Thing)
    return module.result


@pytest.fixture(autouse=True)
def empty_kernel():
    KERNEL.clear()


def test_a_bad_item_anywhere_changes_nothing():
    result = run([{"name": "a", "value": 1}, {"name": "b2", "value": 2}, {"name": "c", "value": 3}])
    assert result["failed"] and result["msg"] == "config[1] (thing b2): name: 'b2' is not a word"
    assert KERNEL == {}


def test_an_unexpected_exception_is_one_line_naming_the_item_with_the_traceback_kept():
    broken = {"name": "b", "value": 2, "breaks": ValueError("boom\nline two")}
    result = run([{"name": "a", "value": 1}, broken])
    assert result["msg"] == "config[1] (thing b): unexpected ValueError: boom line two"
    assert "Traceback" in result["exception"] and "ValueError" in result["exception"]
    assert [r["label"] for r in result["results"]] == ["thing a"] and result["changed"] is True
    assert KERNEL == {"a": 1}  # b was put back: it did not exist


def test_a_failed_restore_is_reported_as_such():
    result = run([{"name": "b", "value": 2, "breaks": MpsocksError("the kernel refused"), "sticks": True}])
    assert result["failed"] and "\n" not in result["msg"]
    assert result["msg"] == ("the kernel refused; putting the previous state back failed too (the kernel "
                             "refused), so thing b is left half-changed")


def test_check_mode_predicts_and_changes_nothing():
    result = run([{"name": "a", "value": 1}], check_mode=True)
    assert result["changed"] and result["results"][0]["thing"] == {"name": "a", "value": 1, "netns": None}
    assert KERNEL == {}
