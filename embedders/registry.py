"""One registry class for embedding functions and data loaders.

A :class:`Registry` maps a short name (``"open_clip"``, ``"image"``) to a class. Built-ins
are registered as ``"package.module:Class"`` strings and imported on first :meth:`get`, so
``import embedders`` costs nothing heavy (no torch). Stored collection configs hold only
these names, never import paths: resolving a config can reach only what was registered.

``embedders.embedding_functions`` and ``loaders.data_loaders`` are the two instances.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

from embedders.errors import ConfigError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Names to classes, with lazy built-ins and errors that list the choices.

    Args:
        kind: What the registry holds, used in messages (``"embedding function"``).
        builtins: ``name -> "module:Attribute"`` (or ``(target, install_hint)``); imported
            on first use.
        required: Attribute names every registered class must have (its protocol).
        aliases: ``old name -> registered name``, so configs stored under a retired name still
            resolve; aliases are not listed by :meth:`names`.

    Example:
        >>> reg = Registry("widget", builtins={"od": "collections:OrderedDict"})
        >>> reg.get("od").__name__
        'OrderedDict'
        >>> @reg.register("mine", check_name=False)
        ... class Mine:
        ...     pass
        >>> reg.names()
        ('mine', 'od')
    """

    def __init__(
        self,
        kind: str,
        builtins: Mapping[str, str | tuple[str, str]] | None = None,
        *,
        required: tuple[str, ...] = (),
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self._required = required
        self._aliases = dict(aliases or {})
        self._lock = threading.RLock()
        # name -> class, or (dotted target, install hint) until first use
        self._entries: dict[str, type | tuple[str, str]] = {}
        for name, target in (builtins or {}).items():
            target, hint = (target, "") if isinstance(target, str) else target
            self._check_target(name, target)
            self._entries[name] = (target, hint)

    # ----------------------------------------------------------------- registration
    @overload
    def register(self, name: T, *, clobber: bool = ..., check_name: bool = ...) -> T: ...

    @overload
    def register(
        self, name: str | None = ..., *, clobber: bool = ..., check_name: bool = ...
    ) -> Callable[[T], T]: ...

    def register(
        self,
        name: str | T | None = None,
        *,
        clobber: bool = False,
        check_name: bool = True,
    ) -> T | Callable[[T], T]:
        """Class decorator that registers a class under ``name`` (default: ``cls.name()``).

        Args:
            name: The registry key. Omitted (or ``@register`` used bare) means ``cls.name()``.
            clobber: Replace an existing entry of the same name instead of refusing.
            check_name: Require ``cls.name() == name`` when the class has a static ``name()``,
                so that the name a collection persists resolves back to this class.

        Returns:
            The decorator (or the class itself when used bare).

        Raises:
            ValueError: The name is taken and ``clobber`` is false, or disagrees with ``name()``.
            TypeError: The object is not a class or lacks a required attribute.

        Example:
            >>> reg = Registry("widget")
            >>> @reg.register("w")
            ... class W:
            ...     @staticmethod
            ...     def name():
            ...         return "w"
            >>> reg.get("w") is W
            True
        """
        if isinstance(name, type):  # used bare: @registry.register
            return self.add(None, name, clobber=clobber, check_name=check_name)

        def decorator(cls: T) -> T:
            return self.add(name, cls, clobber=clobber, check_name=check_name)

        return decorator

    def add(
        self, name: str | None, cls: T, *, clobber: bool = False, check_name: bool = True
    ) -> T:
        """Register ``cls`` under ``name`` directly (the non-decorator form of :meth:`register`).

        Example:
            >>> reg = Registry("widget")
            >>> _ = reg.add("d", dict, check_name=False)
            >>> "d" in reg
            True
        """
        if not isinstance(cls, type):
            raise TypeError(
                f"can only register classes as {self.kind}s; got {cls!r} of type "
                f"{type(cls).__name__} (register the class, not an instance)"
            )
        declared = _static_name(cls)
        if name is None:
            if declared is None:
                raise TypeError(
                    f"{cls.__qualname__} has no static name(); pass the name explicitly: "
                    f"@register('my-name')"
                )
            name = declared
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} names are non-empty strings; got {name!r}")
        if check_name and declared is not None and declared != name:
            raise ValueError(
                f"{cls.__qualname__}.name() returns {declared!r} but it is being registered as "
                f"{name!r}; a persisted config stores name() and must resolve back to this class "
                f"(register it as {declared!r}, or pass check_name=False for an alias)"
            )
        missing = [attr for attr in self._required if not hasattr(cls, attr)]
        if missing:
            raise TypeError(
                f"{cls.__qualname__} cannot be registered as a {self.kind}: it lacks {missing}"
            )
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and not clobber and existing is not cls:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered "
                    f"({_describe(existing)}); choose another name or pass clobber=True"
                )
            self._entries[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove ``name``; mostly for tests that register temporary classes.

        Example:
            >>> reg = Registry("widget", builtins={"od": "collections:OrderedDict"})
            >>> reg.unregister("od")
            >>> "od" in reg
            False
        """
        with self._lock:
            if name not in self._entries:
                raise self._unknown(name)
            del self._entries[name]

    # ----------------------------------------------------------------- lookup
    def get(self, name: str) -> T:
        """Return the class registered as ``name``, importing a lazy built-in on first use.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the names and the
                closest match.
            ImportError: a built-in's optional dependency is missing (with an install hint).

        Example:
            >>> Registry("widget", builtins={"od": "collections:OrderedDict"}).get("od")
            <class 'collections.OrderedDict'>
        """
        if isinstance(name, str) and name not in self._entries:
            name = self._aliases.get(name, name)
        with self._lock:
            entry = self._entries.get(name) if isinstance(name, str) else None
            if entry is None:
                raise self._unknown(name)
            if isinstance(entry, type):
                return entry  # type: ignore[return-value]
            cls = self._import(name, *entry)
            if not isinstance(cls, type):
                raise TypeError(f"built-in {self.kind} {name!r} -> {entry[0]!r} is not a class")
            self._entries[name] = cls
            return cls  # type: ignore[return-value]

    def build(self, name: str, config: Mapping[str, Any] | None = None, **runtime_options: Any) -> Any:
        """Construct ``name`` from its persisted ``config``, then apply host runtime options.

        Runtime options (``device``, ``batch_size``, ``max_workers`` ...) are host choices
        that are never persisted; they are applied through the object's
        ``set_runtime_options(**options)``.

        Args:
            name: A registered name.
            config: What ``get_config()`` returned when the object was persisted.
            **runtime_options: Host-specific options for this process.

        Returns:
            The constructed object.

        Raises:
            UnknownNameError: ``name`` is not registered.
            ConfigError: The config (or a runtime option) is rejected.

        Example:
            >>> import embedders
            >>> ef = embedders.embedding_functions.build("hash", {"dim": 8})
            >>> ef.get_config()["dim"]
            8
        """
        cls = self.get(name)
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"the config of {self.kind} {name!r} must be a dict; got {type(config).__name__}"
            )
        obj = cls.build_from_config(dict(config or {}))
        if runtime_options:
            setter = getattr(obj, "set_runtime_options", None)
            if setter is None:
                raise ConfigError(
                    f"{self.kind} {name!r} ({cls.__qualname__}) takes no runtime options; "
                    f"got {sorted(runtime_options)}"
                )
            setter(**runtime_options)
        return obj

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted.

        Example:
            >>> Registry("widget", builtins={"b": "x:B", "a": "x:A"}).names()
            ('a', 'b')
        """
        with self._lock:
            return tuple(sorted(self._entries))

    @property
    def entries(self) -> Mapping[str, type | tuple[str, str]]:
        """Read-only view: name -> class, or ``(dotted target, install hint)`` if not yet imported."""
        return MappingProxyType(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"

    # ----------------------------------------------------------------- helpers
    def _unknown(self, name: object) -> UnknownNameError:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownNameError(
            f"no {self.kind} named {name!r}{hint}. Registered: {list(names)}. "
            f"Register your own class with @register({str(name)!r})."
        )

    def _check_target(self, name: str, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(
                f"built-in {self.kind} {name!r} must point to 'package.module:Attribute'; "
                f"got {target!r}"
            )

    def _import(self, name: str, target: str, hint: str) -> Any:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            fix = f" ({hint})" if hint else ""
            raise ImportError(
                f"{self.kind} {name!r} needs {module_name!r}, which failed to import: {exc}{fix}"
            ) from exc
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise ImportError(f"{module_name!r} has no {attr!r} (built-in {self.kind} {name!r})") from exc


def _static_name(cls: type) -> str | None:
    """``cls.name()`` when it is callable without an instance and returns a string."""
    fn = getattr(cls, "name", None)
    if not callable(fn):
        return None
    try:
        value = fn()
    except TypeError:  # an instance method: nothing to check against
        return None
    return value if isinstance(value, str) else None


def _describe(entry: type | tuple[str, str]) -> str:
    if isinstance(entry, type):
        return f"{entry.__module__}.{entry.__qualname__}"
    return f"built-in {entry[0]}"
