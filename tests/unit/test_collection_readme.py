"""The collection's own README (galaxy.yml's readme) names every module, role and plugin it ships."""

import re
from pathlib import Path

COLLECTION = Path(__file__).resolve().parents[2] / "collection"


def test_galaxy_names_a_readme_that_exists():
    readme = re.search(r"^readme: (\S+)$", (COLLECTION / "galaxy.yml").read_text(), re.M)[1]
    assert (COLLECTION / readme).is_file()


def test_every_module_role_and_plugin_is_named():
    text = (COLLECTION / "README.md").read_text()
    shipped = [path.stem for path in (COLLECTION / "plugins").glob("*/*.py")
               if path.parent.name in ("modules", "filter", "connection")]
    shipped += [path.name for path in (COLLECTION / "roles").iterdir()]
    assert [name for name in shipped if f"`{name}`" not in text] == []
