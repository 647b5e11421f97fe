"""Typed reading of raw stack configuration, collecting every problem with its full key path.

Each read returns a value of the asked-for type. When the raw value is wrong, the problem is
recorded and a neutral fallback of the same type is returned, so that reading goes on and all
problems are reported together; `Problems.raise_if_any` then stops the program before any of the
fallbacks can be used.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from components.settings.errors import ConfigError, Problem

T = TypeVar("T")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

# A mirror: an internal server that serves what would otherwise come from the internet (Helm charts:
# `platform.chartMirror`; the K3s binary: `cluster.k3sMirror`). https, because what it serves runs
# with root or cluster-admin rights and plain http can be swapped in transit; plain http only on a
# loopback host (127.0.0.0/8, localhost, [::1]), where no network lies between the two ends.
_MIRROR = re.compile(
    r"^(?P<scheme>https?)://(?P<host>[a-z0-9]([-a-z0-9.]*[a-z0-9])?|\[::1\])(:(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[-A-Za-z0-9._~%/]*)?$"
)
MIRROR_LOOPBACK = "127.0.0.0/8, localhost or [::1]"


def is_mirror_url(text: str) -> bool:
    """An https URL without query or credentials, or an http one on a loopback host (see _MIRROR)."""
    match = _MIRROR.fullmatch(text)
    if match is None or not 1 <= int(match["port"] or 443) <= 65535:
        return False
    if match["scheme"] == "https":
        return True
    host = match["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Missing:
    """Marks a value that is absent; its absence has been reported once already."""


MISSING = _Missing()


class Problems:
    """The problems found so far, in the order they were found."""

    def __init__(self) -> None:
        self._items: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        self._items.append(Problem(key, message))

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise ConfigError(self._items)


def _type_name(raw: object) -> str:
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, int | float):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, Mapping):
        return "a mapping"
    if isinstance(raw, list):
        return "a list"
    return "null" if raw is None else type(raw).__name__


class Value:
    """One raw configuration value at a key path such as `sophia-infra:cluster.nodes[2].host`."""

    def __init__(self, path: str, raw: object, problems: Problems) -> None:
        self.path = path
        self.raw = raw
        self.problems = problems

    @property
    def present(self) -> bool:
        return not isinstance(self.raw, _Missing)

    def fail(self, message: str) -> None:
        self.problems.add(self.path, message)

    def _expect(self, kind: type | tuple[type, ...], what: str) -> bool:
        if not self.present:
            return False
        if isinstance(self.raw, bool) and kind is not bool:
            self.fail(f"must be {what}, got a boolean")
            return False
        if not isinstance(self.raw, kind):
            self.fail(f"must be {what}, got {_type_name(self.raw)}")
            return False
        return True

    def string(self, *, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
        if not self._expect(str, "a string"):
            return ""
        assert isinstance(self.raw, str)
        if not self.raw.strip():
            self.fail("must not be empty")
            return ""
        if pattern is not None and not pattern.fullmatch(self.raw):
            self.fail(f"must be {what}, got {self.raw!r}")
            return ""
        return self.raw

    def integer(self, *, minimum: int, maximum: int) -> int:
        if not self._expect(int, "a whole number"):
            return minimum
        assert isinstance(self.raw, int)
        if not minimum <= self.raw <= maximum:
            self.fail(f"must be between {minimum} and {maximum}, got {self.raw}")
            return minimum
        return self.raw

    def boolean(self) -> bool:
        if not self._expect(bool, "true or false"):
            return False
        assert isinstance(self.raw, bool)
        return self.raw

    def choice(self, choices: Sequence[str]) -> str:
        if not self._expect(str, "a string"):
            return ""
        if self.raw not in choices:
            self.fail(f"must be one of {', '.join(choices)}, got {self.raw!r}")
            return ""
        assert isinstance(self.raw, str)
        return self.raw

    def ip(self) -> str:
        """An IPv4 or IPv6 address, returned in its normal form."""
        text = self.string()
        if not text:
            return ""
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.fail(f"must be an IP address, got {text!r}")
            return ""

    def host(self) -> str:
        """An IP address or a DNS name."""
        text = self.string()
        if not text:
            return ""
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        # An all-digit last label is a mistyped IP address (`999.1.1.1`), not a name.
        if not DNS_NAME.fullmatch(text) or text.rsplit(".", 1)[-1].isdigit():
            self.fail(f"must be an IP address or a DNS name, got {text!r}")
            return ""
        return text

    def mirror_url(self, what: str) -> str:
        """A mirror's base URL (is_mirror_url); `what` names what it serves, for the message."""
        text = self.string()
        if text and not is_mirror_url(text):
            self.fail(f"must be an https:// URL of {what} (http:// only on {MIRROR_LOOPBACK}), got {text!r}")
            return ""
        return text

    def dns_label(self) -> str:
        return self.string(pattern=DNS_LABEL, what="a DNS label (lowercase letters, digits and '-', at most 63)")

    def section(self) -> Section:
        if not self._expect(Mapping, "a mapping"):
            return Section(self.path, {}, self.problems, broken=True)
        assert isinstance(self.raw, Mapping)
        bad = [k for k in self.raw if not isinstance(k, str)]
        for key in bad:
            self.fail(f"key {key!r} must be a string")
        return Section(self.path, {k: v for k, v in self.raw.items() if isinstance(k, str)}, self.problems)

    def items(self, *, minimum: int = 0, maximum: int = 1000) -> list[Value]:
        if not self._expect(list, "a list"):
            return []
        assert isinstance(self.raw, list)
        if not minimum <= len(self.raw) <= maximum:
            if len(self.raw) < minimum:
                self.fail(f"must have at least {minimum} entr{'y' if minimum == 1 else 'ies'}, got {len(self.raw)}")
            else:
                self.fail(f"must have at most {maximum} entries, got {len(self.raw)}")
        return [Value(f"{self.path}[{i}]", item, self.problems) for i, item in enumerate(self.raw[:maximum])]

    def list_of(self, read: Callable[[Value], T], *, minimum: int = 0, maximum: int = 1000) -> tuple[T, ...]:
        return tuple(read(item) for item in self.items(minimum=minimum, maximum=maximum))

    def mapping(self, read: Callable[[Value], T], *, key_pattern: re.Pattern[str], what: str) -> dict[str, T]:
        """A mapping with free keys (checked against `key_pattern`) and values read by `read`."""
        section = self.section()
        result: dict[str, T] = {}
        for key in sorted(section.raw):
            value = section.take(key)
            if not key_pattern.fullmatch(key):
                self.problems.add(value.path, f"key must be {what}")
                continue
            result[key] = read(value)
        return result

    def labels(self) -> dict[str, str]:
        return self.mapping(
            lambda v: v.string(pattern=LABEL_VALUE, what="a Kubernetes label value") if v.raw != "" else "",
            key_pattern=LABEL_KEY,
            what="a Kubernetes label key",
        )


class Section:
    """A mapping of known keys. Keys never asked for are reported as unknown on `close`."""

    def __init__(self, path: str, raw: Mapping[str, object], problems: Problems, *, broken: bool = False) -> None:
        self.path = path
        self.raw = raw
        self.problems = problems
        self.broken = broken
        self._taken: set[str] = set()

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str) -> Value:
        self._taken.add(key)
        return Value(self._child(key), self.raw.get(key, MISSING), self.problems)

    def required(self, key: str) -> Value:
        value = self.take(key)
        if not value.present and not self.broken:
            self.problems.add(value.path, "is required")
        return value

    def optional(self, key: str) -> Value | None:
        value = self.take(key)
        return value if value.present else None

    def close(self) -> None:
        for key in sorted(set(self.raw) - self._taken):
            self.problems.add(self._child(key), "unknown key")
