# -*- coding: utf-8 -*-
# Copyright: mpsocks developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compiled code of modules imported from zip files, kept between runs: installed into the guest's image.

Ansible sends every module call its module and module_utils as a zip, and Python compiles what it imports
from a zip every time (it writes no ``.pyc`` there). Under TCG that compiling costs the guest about half a
second per module call. Module guest_image puts this file into the image's site-packages with a ``.pth``
line that calls ``install()``, so every Python in the guest keeps the code of each zipped module, keyed
by the hash of its source, in ``CACHE``: a module call compiles only what changed since the one before.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import marshal
import os
import sys
import zipimport

CACHE = "/var/cache/mpsocks/pycache"
#: The .pth line that makes every Python of the image call install() at start-up.
PTH_LINE = "import mpsocks_zip_code_cache; mpsocks_zip_code_cache.install()\n"
#: The name this file has in the image's site-packages.
MODULE_NAME = "mpsocks_zip_code_cache"


def cache_key(fullname, source):
    """The name of FULLNAME's cached code: the interpreter's bytecode magic, the name and the source."""
    import hashlib  # here, not at start-up: every Python of the guest imports this file
    from importlib.util import MAGIC_NUMBER

    return hashlib.sha256(MAGIC_NUMBER + fullname.encode() + b"\0" + source.encode()).hexdigest()


class CachingZipImporter(zipimport.zipimporter):
    """zipimport, with the code of each module read from the cache when its source has not changed."""

    cache = CACHE

    def get_code(self, fullname):
        try:
            source = self.get_source(fullname)
        except zipimport.ZipImportError:
            source = None
        if source is None:  # only bytecode in the zip: nothing to compile
            return super().get_code(fullname)
        path = os.path.join(self.cache, cache_key(fullname, source))
        try:
            with open(path, "rb") as handle:
                return marshal.load(handle)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile(source, self.get_filename(fullname), "exec", dont_inherit=True)
        try:
            if not os.path.isdir(self.cache):
                os.makedirs(self.cache, 0o700)
            tmp = "%s.%d" % (path, os.getpid())
            with open(tmp, "wb") as handle:
                marshal.dump(code, handle)
            os.rename(tmp, path)
        except OSError:  # a read-only or full disk: compiled, just not kept
            pass
        return code


def install(cache=None):
    """Make zip files on sys.path import through CachingZipImporter (kept in CACHE, or CACHE given)."""
    if cache:
        CachingZipImporter.cache = cache
    sys.path_hooks[:] = [CachingZipImporter if hook is zipimport.zipimporter else hook
                         for hook in sys.path_hooks]
    for path, finder in list(sys.path_importer_cache.items()):
        if isinstance(finder, zipimport.zipimporter) and not isinstance(finder, CachingZipImporter):
            del sys.path_importer_cache[path]
