"""The Dockerfile and the Makefile install the same pinned dependency set as pyproject.toml,
held to the tested versions in constraints.txt.

No Docker engine runs here, so the image is checked by reading its recipe.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", requirement.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_torch_is_pinned_in_pyproject() -> None:
    pins = _pins()
    assert pins.get("torch") == "2.14.1"
    assert pins.get("torchvision") == "0.29.1"


def test_dockerfile_installs_the_pins_and_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, version in _pins().items():
        assert f"{name}=={version}" in dockerfile, f"Dockerfile does not install {name}=={version}"
    assert re.search(r"pip install (-c constraints\.txt )?\.\s*$", dockerfile, flags=re.MULTILINE), \
        "Dockerfile must `pip install .`"
    assert 'ENTRYPOINT ["wsi-prognosis"]' in dockerfile


def test_entry_point_in_pyproject_matches_the_image() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["wsi-prognosis"] == "wsi_prognosis.cli:main"


def test_makefile_installs_the_same_pins_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for name, version in _pins().items():
        assert f"{name}=={version}" in makefile


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            assert match, f"constraints.txt: {line!r} is not `name==version` (regenerate with `make constraints`)"
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_constraints_pin_the_tested_set_but_not_the_project() -> None:
    constraints, pins = _constraints(), _pins()
    assert "wsi-prognosis" not in constraints
    for name, version in pins.items():
        assert constraints.get(name.lower()) == version, f"constraints.txt disagrees with pyproject on {name}"


def test_makefile_and_dockerfile_install_through_the_constraints() -> None:
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    assert "CONSTRAINTS ?= constraints.txt" in makefile
    installs = [line for line in makefile.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert re.search(r"^constraints:", makefile, flags=re.MULTILINE)
    assert re.search(r"^COPY .*constraints\.txt", dockerfile, flags=re.MULTILINE)
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
