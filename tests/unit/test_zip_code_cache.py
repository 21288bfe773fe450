"""zip_code_cache: a module imported from a zip is compiled once, then its code comes from the cache."""

import subprocess
import sys
import zipfile

from mpsocks_testlib import collections_root

IMPORT = """
import sys
sys.path.insert(0, {collections!r})
from ansible_collections.mpsocks.mptcp.plugins.module_utils import zip_code_cache
zip_code_cache.install({cache!r})
sys.path.insert(0, {archive!r})
import zipped
print(zipped.ANSWER, zipped.__file__)
"""


def import_from_zip(tmp_path, source: str) -> str:
    archive = tmp_path / "payload.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("zipped.py", source)
    program = IMPORT.format(collections=str(collections_root()), cache=str(tmp_path / "cache"),
                            archive=str(archive))
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_code_comes_from_the_cache_until_the_source_changes(tmp_path):
    assert import_from_zip(tmp_path, "ANSWER = 1\n") == f"1 {tmp_path / 'payload.zip' / 'zipped.py'}"
    (entry,) = (tmp_path / "cache").iterdir()
    # Put other code under the same source's key: the next import runs it, so it did not compile.
    entry.write_bytes(subprocess.run(
        [sys.executable, "-c", "import marshal, sys; sys.stdout.buffer.write(marshal.dumps("
                               "compile('ANSWER = 2', 'zipped.py', 'exec')))"],
        capture_output=True, check=True).stdout)
    assert import_from_zip(tmp_path, "ANSWER = 1\n").startswith("2 ")
    # Another source is another key: compiled, and kept beside the first.
    assert import_from_zip(tmp_path, "ANSWER = 3\n").startswith("3 ")
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_cache_that_cannot_be_written_only_costs_the_compiling(tmp_path):
    (tmp_path / "cache").write_text("a file where the folder should be")
    assert import_from_zip(tmp_path, "ANSWER = 4\n").startswith("4 ")
