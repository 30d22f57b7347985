"""A small name -> object registry (the pattern of Model Garden's `core/registry.py`).

Architectures, losses and other pluggable pieces are looked up by the names that configs and
flags carry. Registering a name twice is a programming error; looking up an unknown name is a
user error whose message lists the known names.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects; `register` doubles as a decorator."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Returns a decorator that registers its argument under `name`.

    Raises:
      KeyError: if `name` is already registered.
    """

    def decorator(obj: T) -> T:
      if name in self._entries:
        raise KeyError(f"{self.kind} {name!r} is already registered")
      self._entries[name] = obj
      return obj

    return decorator

  def get(self, name: str) -> T:
    """Returns the object registered as `name`.

    Raises:
      KeyError: naming the unknown entry and listing the known ones.
    """
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
      ) from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
