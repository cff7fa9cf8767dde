"""A name -> class registry filled by a class decorator; shared by the engine's methods and
metrics and the server's guard stages.

Stores classes, never instances (each caller constructs its own, so no state is shared), sets
the class's `name` attribute, refuses a name registered twice, and answers an unknown name with
an error listing the valid ones. Read-only to everyone but the decorator. Imports nothing heavy.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T", bound=type)


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str, unknown: type[Exception] = KeyError) -> None:
        self.kind = kind  # "unlearning method": used in error messages
        self.unknown = unknown  # raised for an unknown name
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: `@REGISTRY.register("npo")`."""

        def deco(cls: T) -> T:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls

        return deco

    def get_class(self, name: str) -> T:
        try:
            return self._classes[name]
        except KeyError:
            raise self.unknown(f"unknown {self.kind} {name!r}; valid: {sorted(self._classes)}") from None

    def __getitem__(self, name: str) -> T:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
