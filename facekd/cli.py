"""What a person meets at the terminal: ``--help``, override checks with suggestions, and the one error path.

Every script is three lines around :func:`run_script`::

    run_script("facekd.distill.stage:distill", "distill", __doc__)

Before Hydra runs, the command line is composed once here, so that

* ``--help`` prints the script's purpose, the config groups it reads and its own keys with their
  defaults and comments (Hydra's full dump stays behind ``--cfg job``);
* a misspelled key or option is refused with the nearest known ones ("did you mean ..."), never with
  advice to add it with ``+``;
* ``paths.root`` is checked writable before Hydra or any stage writes there.

A :class:`~facekd.errors.FacekdError` raised anywhere ends as one paragraph on stderr and exit status 2,
with no stack; a full disk is reported as such. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import importlib
import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from facekd.config import CONFIGS, ROW_ALIASES, compose_config, register_rows
from facekd.errors import ConfigError, EXIT_USER_ERROR, FacekdError, InputFileError

__all__ = ["CONFIGS", "compose_config", "run_script", "help_text", "check_overrides", "ensure_writable_root", "refuse",
           "suggest_keys", "yaml_key_comments"]


# Hydra flags that take the next argument as their value (so it is not an override).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
_HELP_KEYS_MAX = 60


# ------------------------------------------------------------------------------------------ entry point
def run_script(target: str, config_name: str, doc: str | None, argv: Sequence[str] | None = None,
               command: str | None = None) -> None:
    """Run ``target`` (``"module:function"``, imported only when needed) as a Hydra app on ``config_name``.

    ``command`` is how the user called it (``python scripts/<name>.py`` or ``facekd <name>``), for messages.
    Override values have ``~`` and ``$VARS`` expanded (:func:`expand_override`)."""
    args = [expand_override(a) for a in (sys.argv[1:] if argv is None else argv)]
    script = Path(sys.argv[0]).name if argv is None else f"{config_name}.py"
    command = command or f"python scripts/{script}"
    try:
        if "--help" in args or "-h" in args:
            try:
                print(help_text(config_name, doc, command), flush=True)
            except BrokenPipeError:  # e.g. `--help | head`
                sys.stderr.close()
            return
        cfg = check_overrides(config_name, args, command)
        if cfg is not None:
            ensure_writable_root(cfg)
        task = _import(target)
        _run_hydra(task, config_name, script, args)
    except FacekdError as err:
        refuse(err)


def expand_override(arg: str) -> str:
    """``key=value`` with ``~`` (at the start of the value or of a list item) and ``$NAME`` environment variables
    expanded, as a shell would have done before the ``=``; Hydra's own ``${...}`` interpolations are left alone."""
    key, eq, value = arg.partition("=")
    if not eq or arg.startswith("-"):
        return arg
    value = re.sub(r"(^|(?<=[\[,]))~(?=/|$|[\],])", lambda m: m.group(1) + os.path.expanduser("~"), value)
    value = re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", lambda m: os.environ.get(m.group(1), m.group(0)), value)
    return f"{key}={value}"


def refuse(err: BaseException) -> None:
    """Print ``err`` as one paragraph on stderr and exit with :data:`EXIT_USER_ERROR`, without a stack."""
    text = str(err).strip() or type(err).__name__
    sys.stdout.flush()
    print(f"facekd: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def _import(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _guarded(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``task`` with facekd's errors and a full disk turned into :func:`refuse` (inside Hydra's job)."""

    @functools.wraps(task)
    def job(cfg: Any) -> Any:
        try:
            with _console_above_bars():
                return task(cfg)
        except FacekdError as err:
            refuse(err)
        except (OSError, RuntimeError) as err:
            if not disk_full(err):
                raise
            where = f" while writing {err.filename}" if getattr(err, "filename", None) else ""
            refuse(OSError(
                f"The disk is full (no space left on device){where}. The partial output is kept: free some "
                "space, or point paths.root at a larger disk, and rerun the same command to resume."))

    return job


@contextlib.contextmanager
def _console_above_bars() -> Iterator[None]:
    """Console log lines go above a progress bar, never into it (tqdm's redirect), at the console's own level (the
    redirect drops it: without this, every INFO line would reach the console)."""
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    console = [h.level for h in root.handlers if type(h) is logging.StreamHandler]
    with logging_redirect_tqdm():
        for h in root.handlers:
            if type(h) is not logging.StreamHandler and type(h).__name__ == "_TqdmLoggingHandler" and console:
                h.setLevel(min(console))
        yield


def disk_full(err: BaseException) -> bool:
    """Whether a failed write ran out of space, however the library reports it: ``ENOSPC`` / ``EDQUOT`` from the
    OS, a short write with no errno (numpy's ``N requested and M written``; a "No space left" message), or torch's
    zip writer coming up short (a ``RuntimeError``: ``unexpected pos N vs M``, ``PytorchStreamWriter failed
    writing``)."""
    text = str(err)
    if isinstance(err, RuntimeError):
        return bool(re.search(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed writing", text))
    if not isinstance(err, OSError):
        return False
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return err.errno is None and (bool(re.search(r"\d+ requested and \d+ written", text)) or "No space left" in text)


def _run_hydra(task: Callable[[Any], Any], config_name: str, script: str, args: list[str]) -> None:
    import hydra

    register_rows()
    job = _guarded(task)
    job.__module__ = "__main__"
    saved = sys.argv
    sys.argv = [script, *args]
    try:
        hydra.main(config_path=str(CONFIGS), config_name=config_name, version_base="1.3")(job)()
    finally:
        sys.argv = saved


# ------------------------------------------------------------------------------------------- overrides
def _overrides(args: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            if "=" not in arg:
                continue
        if arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        out.append(arg)
    return out


def check_overrides(config_name: str, args: Sequence[str], command: str = "") -> Any:
    """Compose ``config_name`` with the command line's overrides; a bad one raises :class:`ConfigError`.

    Returns the composed config, or ``None`` for a multirun (whose sweeps Hydra expands itself).
    """
    if "-m" in args or "--multirun" in args:
        return None
    from hydra.errors import MissingConfigException, OverrideParseException, HydraException

    overrides = _overrides(args)
    mine = [o for o in overrides if not o.lstrip("+~").startswith("hydra.") and not o.startswith("hydra/")]
    help_hint = f"`{command or 'python scripts/' + config_name + '.py'} --help` lists the keys and options."
    try:
        return compose_config(config_name, mine)
    except OverrideParseException as err:
        detail = str(err).splitlines()[0]
        raise ConfigError(f"Cannot read the command-line override(s) {' '.join(mine)}: {detail}. Write each "
                          f"override as key=value, e.g. seed=1, with no spaces around '='. {help_hint}") from None
    except MissingConfigException as err:
        raise ConfigError(_missing_option_message(str(err), mine, help_hint)) from None
    except HydraException as err:
        raise ConfigError(_unknown_key_message(str(err), config_name, mine, help_hint)) from None


def _unknown_key_message(detail: str, config_name: str, overrides: list[str], help_hint: str) -> str:
    m = re.search(r"Could not override '([^']+)'", detail) or re.search(r"Could not delete from config\. '([^']+)'", detail)
    appended = re.search(r"An item is already at '([^']+)'", detail)
    if appended:
        key = appended.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == key), "VALUE")
        return f"'{key}' already exists in {config_name}.yaml: set it without the '+', as {key}={value}."
    if not m:
        first = detail.splitlines()[0]
        return f"The command line cannot be applied to {config_name}.yaml: {first}. {help_hint}"
    key = m.group(1)
    given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)
    parts = key.split(".")
    if len(parts) > 1 and parts[0] == "baselines" and parts[1] in ROW_ALIASES:
        renamed = ".".join(["baselines", ROW_ALIASES[parts[1]], *parts[2:]])
        return f"The row '{parts[1]}' is now called '{ROW_ALIASES[parts[1]]}': write {renamed} (from {given})."
    rest = [o for o in overrides if o != given]
    try:
        known = list(_flat_keys(_plain(compose_config(config_name, rest))))
    except Exception:  # another override is bad too: suggest from the defaults
        known = list(_flat_keys(_plain(compose_config(config_name, []))))
    close = suggest_keys(key, known)
    guess = f" Did you mean {' or '.join(close)}?" if close else ""
    return (f"Unknown config key '{key}' (from {given}): no setting of {config_name}.yaml has that name, so "
            f"nothing would read it.{guess} {help_hint}")


def _missing_option_message(detail: str, overrides: list[str], help_hint: str) -> str:
    m = re.search(r"Could not find '([^']+)/([^'/]+)'", detail)
    if not m:
        return f"{detail.splitlines()[0]}. {help_hint}"
    group, option = m.group(1), m.group(2)
    options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    close = difflib.get_close_matches(option, options, n=2, cutoff=0.5)
    guess = f" Did you mean {' or '.join(close)}?" if close else ""
    given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] == group), f"{group}={option}")
    return (f"No option '{option}' in the config group '{group}' (from {given}). The options are: "
            f"{', '.join(options)}.{guess} {help_hint}")


def suggest_keys(key: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The known dotted keys closest to a misspelled ``key``: same parent first, then anywhere."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in known if k.rpartition(".")[0] == parent]
    by_leaf = {k.rpartition(".")[2]: k for k in siblings}
    close = [by_leaf[x] for x in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.6)]
    if not close:
        close = difflib.get_close_matches(key, list(known), n=n, cutoff=0.75)
    if not close:  # the right leaf under another parent, e.g. distil.epochs -> distill.epochs
        close = [k for k in known if k.rpartition(".")[2] == leaf][:n]
    return close


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=False)


def _flat_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            yield path
            yield from _flat_keys(v, path + ".")


# ------------------------------------------------------------------------------------------ paths.root
def ensure_writable_root(cfg: Any) -> None:
    """Refuse a ``paths.root`` that is a file or cannot be written, before anything writes there."""
    from omegaconf import OmegaConf

    root = OmegaConf.select(cfg, "paths.root")
    if root is None:
        return
    path = Path(str(root)).expanduser()
    fix = "Every run folder and log goes there: choose a folder you can write, e.g. paths.root=$HOME/facekd-runs."
    if path.exists() and not path.is_dir():
        raise InputFileError(f"paths.root={root} is a file, not a folder. {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputFileError(f"paths.root={root} cannot be written ({reason}). {fix}") from None


# ------------------------------------------------------------------------------------------------ help
def yaml_key_comments(path: Path) -> list[tuple[str, str]]:
    """``(dotted key, trailing comment)`` for each scalar key of a YAML file, in file order.

    A small line reader for facekd's own config files (block style, one key per line), which is all
    ``--help`` needs; ``defaults`` and ``hydra`` are left out.
    """
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, _, comment = rest.partition(" #")
        if not value.strip():
            stack.append((indent, key))
            continue
        path_ = ".".join([k for _, k in stack] + [key])
        if path_.split(".")[0] not in ("defaults", "hydra"):
            out.append((path_, comment.strip()))
    return out


def help_text(config_name: str, doc: str | None, command: str = "") -> str:
    """The ``--help`` page: purpose, usage, the config groups this script reads and its own keys (a default that
    refers to another key is shown as written, e.g. ``${paths.root}/distill/...``)."""
    from omegaconf import OmegaConf

    command = command or f"python scripts/{config_name}.py"
    cfg = compose_config(config_name, [], hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices, resolve=False)
    lines = [textwrap.dedent(doc or "").strip(), "",
             f"usage: {command} [key=value ...] [group=option ...]", ""]
    groups: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for name, choice in choices.items():
        if name.startswith("hydra/") or name == "hydra" or "/" in name.split("@")[0]:
            continue  # Hydra's own groups, and a group's per-stage parts (recipe/distill follows recipe)
        group = name.split("@")[0]
        if group not in groups:
            groups[group] = choice if "@" not in name else None
            names[group] = name
    if groups:
        lines.append("config groups (group=option; * marks the default):")
        for group, choice in groups.items():
            options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
            shown = ", ".join(f"{o}*" if o == choice else o for o in options)
            note = f" (one per table row; set a row's keys with {names[group].split('@')[1].rsplit('.', 1)[0]}.<row>.<key>=value)" \
                if choice is None else ""
            lines.extend(textwrap.wrap(f"{group}: {shown}{note}", width=110, initial_indent="  ",
                                       subsequent_indent="      "))
        lines.append("")
    plain_cfg = OmegaConf.to_container(cfg, resolve=False)
    keys = [(k, c) for k, c in yaml_key_comments(CONFIGS / f"{config_name}.yaml") if _lookup(plain_cfg, k) is not _MISSING]
    if keys:
        lines.append(f"keys of {config_name}.yaml (key=default  # meaning):")
        width = min(44, max(len(f"{k}={_show(_lookup(plain_cfg, k))}") for k, _ in keys[:_HELP_KEYS_MAX]))
        for key, comment in keys[:_HELP_KEYS_MAX]:
            left = f"{key}={_show(_lookup(plain_cfg, key))}"
            line = f"  {left:<{width}}  # {comment}" if comment else f"  {left}"
            lines.append(line if len(line) <= 118 else line[:115] + "...")
        if len(keys) > _HELP_KEYS_MAX:
            lines.append(f"  ... and {len(keys) - _HELP_KEYS_MAX} more")
        lines.append("")
    lines.append(f"the whole resolved config: {command} --cfg job    Hydra's own options: --hydra-help")
    return "\n".join(lines)


_MISSING = object()


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        text = str(value).replace("'", "")
        return text if len(text) <= 40 else text[:37] + "..."
    return str(value)
