"""requirements.lock is the whole tree that `make` installs: it must hold every pin of requirements*.txt."""

from __future__ import annotations

import re

from tests.servers import BASE_DIR


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in (BASE_DIR / path).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def test_the_lock_holds_every_top_level_pin_at_its_version():
    locked = pins("requirements.lock")
    wanted = {**pins("requirements.txt"), **pins("requirements-dev.txt")}
    # After editing a requirements file, `make lock` brings the lock up to date.
    assert {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version} == {}


def test_every_locked_package_carries_a_hash():
    text = (BASE_DIR / "requirements.lock").read_text()
    entries = re.findall(
        r"^[A-Za-z0-9_.-]+==\S+ \\\n(    --hash=sha256:[0-9a-f]{64}[ \\\n]*)+", text, flags=re.MULTILINE
    )
    assert len(entries) == len(pins("requirements.lock")) > 80
