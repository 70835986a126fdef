"""The benchmark harness behind ``orchestra bench``: canonical routing sets in, predictions and metrics out."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigurationError, DataError

__all__ = [
    "bench_router",
    "check_limit",
    "check_output",
    "data_dir",
    "embedder_name",
    "parse_options",
    "read_jsonl",
    "refuse_checkpoint",
    "router_names",
    "router_source",
    "write_report",
]


# orchestra/bench/__init__.py -> the repository root, two levels above the package folder, in a checkout
_CHECKOUT = Path(__file__).resolve().parents[2]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the routing data lives: ``path`` if given, else ``$ORCHESTRA_DATA_DIR``, else ``../shared/data``
    beside the repository (the layout of a development checkout)."""
    if path is None:
        path = os.environ.get("ORCHESTRA_DATA_DIR")
    if path is None:
        if not (_CHECKOUT / "pyproject.toml").is_file():
            # an installed package: "beside the repository" would be a folder beside site-packages
            raise DataError("no routing data folder: pass --data or set ORCHESTRA_DATA_DIR "
                            "(the ../shared/data default is a development checkout's)")
        path = _CHECKOUT.parent / "shared" / "data"
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"data directory {str(resolved)!r} does not exist; pass --data or set ORCHESTRA_DATA_DIR")
    if not resolved.is_dir():
        raise DataError(f"{str(resolved)!r} is a file; --data takes the set's folder (the one holding its JSONL files)")
    return resolved


def check_limit(limit: int | None) -> None:
    """Refuse a ``--limit`` below 1 (0 used to mean every query, and -1 all but the last)."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be 1 or more (or left out for every query), got {limit}")


def check_output(
    path: str | os.PathLike[str] | None, *, data: Path | None, option: str, beside: str | os.PathLike[str] | None = None
) -> None:
    """Refuse an output file before any training, rather than after it: a folder; a file inside the set's folder,
    inside the routing data root (``$ORCHESTRA_DATA_DIR`` or ``../shared/data``) or inside any folder that holds a
    set (an ``agents.jsonl`` or ``models.jsonl``): a run must never write into the data, its own set or another;
    the same file as ``beside``, the command's other output (``--predictions`` beside ``--json``); a file that
    cannot be written, or whose folder cannot be made. An existing file is opened for appending to check it, so
    it is not touched before the run writes it."""
    if path is None:
        return
    out = Path(path).expanduser().resolve()
    if out.is_dir():
        raise ConfigurationError(f"{option} {str(path)!r} is a directory; give a file path")
    if beside is not None and Path(beside).expanduser().resolve() == out:
        raise ConfigurationError(f"{option} {str(path)!r} is also the other output file; give the two outputs different paths")
    folders = [] if data is None else [data]  # None: the output of no one set (a comparison of reports)
    with contextlib.suppress(DataError):  # no data root on this machine: the set's folder is all there is
        folders.append(data_dir())
    folders += [folder for folder in out.parents if (folder / "agents.jsonl").is_file() or (folder / "models.jsonl").is_file()]
    for folder in folders:
        if out.is_relative_to(folder.expanduser().resolve()):
            raise ConfigurationError(f"{option} {str(path)!r} is inside the data folder {str(folder)!r}; write it elsewhere (it could overwrite a set)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"{option} {str(path)!r}: cannot create its folder: {exc.strerror or exc}") from None
    existed = out.exists()
    try:
        with out.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"{option} {str(path)!r}: cannot write it: {exc.strerror or exc}") from None
    if not existed:
        out.unlink(missing_ok=True)  # the check leaves no empty file behind if the run fails before writing


def bench_router(router: Any, router_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The router a bench scores and its name: ``router`` built by name with ``router_options``, or an instance
    as given (a trained one is scored as it is with ``train=False``), which takes no options."""
    from orchestra.routing import load_router  # the routers' entry points load only when a bench runs

    if isinstance(router, str):
        return load_router(router, **dict(router_options or {})), router
    if router_options:
        raise DataError("router_options apply to a router given by name; this router is already built")
    return router, str(getattr(router, "name", type(router).__name__))


def router_source(router: Any, router_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """What made the router a report scores, for a report to say (``router_source``): its class as an import path,
    the options the bench built it with (``None`` for a router given already built), a digest of the file that
    defines the class (a router of one's own changes between runs; its name and options alone would not tell the
    reports apart) and Orchestra's version. A router's own ``describe()`` says more, when it has one."""
    from orchestra import __version__

    cls = type(router)
    digest = None
    with contextlib.suppress(TypeError, OSError):  # a class with no source file (built in, made at run time)
        source = inspect.getsourcefile(cls)
        if source is not None:
            digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "options": None if router_options is None else dict(router_options),
        "source_sha256": digest,
        "orchestra": __version__,
    }


def embedder_name(embedder: Any) -> str | None:
    """An embedder as a report names it: its ``name`` (the project's `Embedder`, the hashing one), else its class;
    None for none."""
    if embedder is None:
        return None
    name = getattr(embedder, "name", None)
    return name if isinstance(name, str) and name else type(embedder).__name__


def refuse_checkpoint(router_options: Mapping[str, Any] | None, bench: str) -> None:
    """Refuse ``--option checkpoint``: every bench trains the router on the set's train split, so a saved router
    given to it would be trained over, never evaluated."""
    if "checkpoint" in (router_options or {}):
        raise DataError(f"the {bench} bench trains the router on the set's train split; it does not evaluate a saved "
                        "checkpoint (leave out --option checkpoint; from Python, load the router and pass it with train=False)")


def parse_options(items: Sequence[str] | None, flag: str = "--option") -> dict[str, Any]:
    """Options from ``--option key=value`` items (or those of another ``flag``: ``--budget``); a value is read as
    JSON when it parses (``k=3``, ``oos_threshold=null``), as a string otherwise. `ConfigurationError` names an
    item without ``=`` or a key given twice."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"{flag} expects key=value, got {item!r}")
        if key.strip() in options:  # the last would win without a word: --budget max_tokens=1 --budget max_tokens=50000
            raise ConfigurationError(f"{flag} {key.strip()} is given twice")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def router_names(text: str, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The routers a bench runs, from ``--router a,b,c``, each with its options: ``key=value`` goes to every
    router, ``NAME:key=value`` to router NAME alone (so ``--router knn,mlp --option knn:k=50``, and for a router
    named by import path ``--option mypkg.routing:MyRouter:k=5``).
    `ConfigurationError` names an empty or repeated router name, and an option scoped to a router not run."""
    names = [name.strip() for name in text.split(",")]
    if not text.strip() or not all(names):
        raise ConfigurationError(f"--router names a router, or several separated by commas; got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(f"--router names {', '.join(repeated)} twice; to compare one router's settings, run it once per setting and compare the reports (orchestra bench compare)")
    per_router: dict[str, dict[str, Any]] = {name: {} for name in names}
    scoped = {key: value for key, value in options.items() if ":" in key}
    for key, value in options.items():  # options for every router first, so that a scoped one overrides them
        if key not in scoped:
            for chosen in per_router.values():
                chosen[key] = value
    for key, value in scoped.items():
        # the last colon ends the router's name: a router named by import path holds one (mypkg.mod:Router:k=3)
        scope, _, bare = key.rpartition(":")
        if scope not in per_router:
            raise ConfigurationError(f"--option {key} is for router {scope!r}, which --router {text} does not run")
        if not bare:
            raise ConfigurationError(f"--option {key} names no option after the router {scope!r}")
        per_router[scope][bare] = value
    return per_router


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their line numbers, blank lines skipped. `DataError` names the file
    (and line) when it is missing, unreadable, or holds a line that is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (some Windows editors write one) is no data
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    # JSON lines end at \n only: str.splitlines would also cut at U+2028, U+0085 and other characters that
    # JSON strings may hold raw (the llmrouter set has some)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        rows.append((number, item))
    return rows


def write_report(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a benchmark report as indented JSON (``--json``), creating the folder; returns the file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out
