"""The upstream files the e2e uses as they are: ../shared/third_party, each checked against its SHA256SUMS.

Charts the program pins (charts/*.tgz), and the CRD K3s installs itself (crds/): see SOURCES.md
there for where each comes from. A file whose digest differs from SHA256SUMS is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Final

from render.stack import PROJECT_DIR

THIRD_PARTY: Final = Path(os.environ.get("SOPHIA_THIRD_PARTY", PROJECT_DIR.parent / "shared" / "third_party"))


def digests() -> dict[str, str]:
    sums = THIRD_PARTY / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums} is missing: the e2e needs ../shared/third_party (or SOPHIA_THIRD_PARTY)")
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            out[name.strip()] = digest.strip()
    return out


def verified(relative: str) -> bytes:
    """The bytes of `third_party/<relative>`, refused unless their sha256 is SHA256SUMS's."""
    expected = digests().get(relative)
    if expected is None:
        raise KeyError(f"{relative} is not in {THIRD_PARTY / 'SHA256SUMS'}")
    data = (THIRD_PARTY / relative).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(f"{THIRD_PARTY / relative}: sha256 {actual}, SHA256SUMS says {expected}")
    return data


def chart_member(package: str, member: str) -> bytes:
    """One file of a verified chart package (`charts/<package>`), e.g. a CRD its `crds/` ships as is."""
    with tarfile.open(fileobj=io.BytesIO(verified(f"charts/{package}")), mode="r:gz") as archive:
        found = archive.extractfile(member)
        if found is None:
            raise KeyError(f"{package} has no file {member}")
        return found.read()
