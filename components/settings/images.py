"""The one registry every Sophia image comes from, and the tag of each image."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.settings.reader import Value

REGISTRY = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)+$")
IMAGE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageSettings:
    registry: str
    """`<host>/<namespace>`, e.g. `docker.io/scoobyjava15`."""
    tags: dict[str, str]

    def image(self, name: str) -> str:
        """The full reference of an image; the only place one is spelled out."""
        return f"{self.registry}/{name}:{self.tags[name]}"

    @property
    def registry_host(self) -> str:
        return self.registry.split("/", 1)[0]

    @property
    def registry_namespace(self) -> str:
        return self.registry.split("/", 1)[1]


def _read_tag(value: Value) -> str:
    tag = value.string(pattern=TAG, what="an image tag")
    if tag == "latest":
        value.fail("must be a pinned tag, not 'latest'")
        return ""
    return tag


def read_images(value: Value) -> ImageSettings:
    section = value.section()
    registry = section.required("registry").string(pattern=REGISTRY, what="'<registry host>/<namespace>'")
    tags = section.required("tags").mapping(_read_tag, key_pattern=IMAGE_NAME, what="an image name")
    section.close()
    return ImageSettings(registry, tags)
