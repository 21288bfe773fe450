"""Offline stand-in for the get-pip.py that ansible-test downloads.

ansible-test bootstraps pip in each sanity virtualenv by running a get-pip
script fetched from the internet, which these machines cannot reach. This one
installs the pip wheel bundled with Python (ensurepip), then lets that pip
install what ansible-test asked for (the pinned pip) from the package index.
tests/sanity places it in ansible-test's cache under the expected name.
"""

import ensurepip
import importlib
import os
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

environment = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
# ensurepip leaves PIP_CONFIG_FILE=/dev/null behind; pip.conf (index, CA) must apply.
os.environ.clear()
os.environ.update(environment)
importlib.invalidate_caches()
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", *[arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]]))
