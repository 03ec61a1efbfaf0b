"""API keys that cannot leak by accident: hidden from repr/str, read from env or mounted Secret files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


class Secret:
    """A credential. Only `reveal()` gives the value, so printing or logging it shows nothing."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")


def load_secret(env: Mapping[str, str], name: str) -> Secret | None:
    """`NAME` holds the value itself; `NAME_FILE` points at a mounted Secret file (Kubernetes style)."""
    value = env.get(name)
    if value:
        return Secret(value.strip())
    path = env.get(f"{name}_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file for {name} ({name}_FILE): {exc.strerror}") from None
        if text:
            return Secret(text)
    return None


def redact(text: str, secrets: Iterable[Secret | None]) -> str:
    """Defence in depth: blank out any secret value that slipped into a message."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), "***")
    return text
