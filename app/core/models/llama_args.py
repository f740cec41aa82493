"""One parser for llama-server's argument forms, shared by the memory estimate and the
model-settings dialog. No Qt, no asyncio.

`LlamaArgs.parse(args)` reads the options Siesta cares about from a recipe's ``args`` (the
same tokens llama-server gets): ``-c 4096``, ``--ctx-size 4096``, ``--ctx-size=4096``,
``-c=4096``, ``-ngl``/``--gpu-layers``/``--n-gpu-layers`` (a number, ``auto`` or ``all``),
``-t``, ``-np``, ``-b``/``-ub``, ``-ctk``/``-ctv``, ``-fa``, ``-nkvo``/``-kvo``,
``-kvu``/``-no-kvu``, ``--swa-full``, ``--fit``/``--fit-target``/``--fit-ctx``,
``--mmproj`` and ``-m``. Everything else is kept, in order, in ``extra``. As in
llama-server, the last occurrence of an option wins, and ``--long_name`` means
``--long-name``. (The llama-server built by Siesta rejects the ``=N`` forms; they are read
here because other launchers write them.)

`with_value(args, option, value)` edits one option in place and keeps the form the user
wrote (``-c 4096`` stays two tokens, ``--ctx-size=4096`` one); an absent option is
appended in its long form. `without(args, option)` removes it. Neither touches any other
token.

llama-server's defaults (this build's ``--help`` and its source): ctx-size 0 = the model's
``context_length``; parallel -1 = auto, which the server turns into 4 slots with one
unified KV cache (``kv_unified``; then the KV cache holds ``n_ctx`` cells in all, whatever
the number of slots); an explicit ``-np N`` leaves the cache per slot (``n_ctx / N`` cells
per slot, the same total); ``-ngl`` auto with ``--fit on`` (as many layers as fit in the
free GPU memory minus ``--fit-target``, 1024 MiB); cache types f16; flash attention auto;
batch 2048, ubatch 512; fit-ctx 4096.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LlamaArgs", "ArgsError", "with_value", "without", "option_names", "DEFAULTS"]


class ArgsError(ValueError):
    """An option Siesta reads has a value llama-server would refuse (or none)."""


def _int(value: str) -> int:
    return int(value, 10)


def _gpu_layers(value: str) -> int | str:
    """``auto`` (also -1), ``all`` (also <= -2) or a layer count, as llama-server reads it."""
    if value in ("auto", "all"):
        return value
    number = int(value, 10)
    return "auto" if number == -1 else "all" if number < -1 else number


_TRUTHY = {"on", "enabled", "true", "1"}
_FALSEY = {"off", "disabled", "false", "0"}


def _on_off_auto(value: str) -> str:
    if value in _TRUTHY:
        return "on"
    if value in _FALSEY:
        return "off"
    if value in ("auto", "-1"):
        return "auto"
    raise ValueError(value)


def _mib_list(value: str) -> tuple[int, ...]:
    return tuple(int(v, 10) for v in value.split(","))


@dataclass(frozen=True)
class _Option:
    names: tuple[str, ...]  # short form first, then the long ones; the last is appended
    convert: Callable[[str], Any] | None  # None: a flag with no value
    negative: tuple[str, ...] = ()  # flags only: the forms that switch it off
    optional_value: bool = False  # -fa / --fit: older builds took them as bare flags


_OPTIONS: dict[str, _Option] = {
    "model": _Option(("-m", "--model"), str),
    "ctx_size": _Option(("-c", "--ctx-size"), _int),
    "n_gpu_layers": _Option(("-ngl", "--gpu-layers", "--n-gpu-layers"), _gpu_layers),
    "threads": _Option(("-t", "--threads"), _int),
    "parallel": _Option(("-np", "--parallel"), _int),
    "batch_size": _Option(("-b", "--batch-size"), _int),
    "ubatch_size": _Option(("-ub", "--ubatch-size"), _int),
    "cache_type_k": _Option(("-ctk", "--cache-type-k"), str),
    "cache_type_v": _Option(("-ctv", "--cache-type-v"), str),
    "flash_attn": _Option(("-fa", "--flash-attn"), _on_off_auto, optional_value=True),
    "no_kv_offload": _Option(("-nkvo", "--no-kv-offload"), None, negative=("-kvo", "--kv-offload")),
    "kv_unified": _Option(("-kvu", "--kv-unified"), None, negative=("-no-kvu", "--no-kv-unified")),
    "swa_full": _Option(("--swa-full",), None),
    "fit": _Option(("-fit", "--fit"), _on_off_auto, optional_value=True),
    "fit_target": _Option(("-fitt", "--fit-target"), _mib_list),
    "fit_ctx": _Option(("-fitc", "--fit-ctx"), _int),
    "mmproj": _Option(("-mm", "--mmproj"), str),
}

DEFAULTS: dict[str, Any] = {
    "ctx_size": 0, "n_gpu_layers": "auto", "threads": -1, "parallel": -1, "batch_size": 2048,
    "ubatch_size": 512, "cache_type_k": "f16", "cache_type_v": "f16", "flash_attn": "auto",
    "no_kv_offload": False, "kv_unified": None, "swa_full": False, "fit": "on",
    "fit_target": (1024,), "fit_ctx": 4096,
}
"""llama-server's defaults for the options above (``kv_unified`` None: on when parallel is auto)."""


def _normalise(token: str) -> str:
    """``--ctx_size`` -> ``--ctx-size``, as llama-server does for long options."""
    return token.replace("_", "-") if token.startswith("--") else token


_BY_NAME: dict[str, tuple[str, bool]] = {}  # any spelling -> (field, positive)
for _field, _opt in _OPTIONS.items():
    for _name in _opt.names:
        _BY_NAME[_name] = (_field, True)
    for _name in _opt.negative:
        _BY_NAME[_name] = (_field, False)


def option_names(option: str) -> tuple[str, ...]:
    """Every spelling of an option given by its field name (``ctx_size``) or one spelling."""
    return _OPTIONS[_field_of(option)].names + _OPTIONS[_field_of(option)].negative


def _field_of(option: str) -> str:
    if option in _OPTIONS:
        return option
    found = _BY_NAME.get(_normalise(option.split("=", 1)[0]))
    if found is None:
        raise KeyError(f"not an option Siesta knows: {option!r}")
    return found[0]


@dataclass(frozen=True)
class _Hit:
    """One occurrence of a known option: tokens [start, end) of the list."""

    field: str
    start: int
    end: int
    spelling: str  # as written, before '='
    value: str | None  # None for a flag (or a bare -fa/--fit)
    inline: bool  # the value was written as name=value
    positive: bool = True


def _scan(args: Sequence[str]) -> tuple[list[_Hit], list[str]]:
    """The occurrences of known options, and every other token in order."""
    hits: list[_Hit] = []
    extra: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, inline_value = token.partition("=") if token.startswith("-") else (token, "", "")
        found = _BY_NAME.get(_normalise(name))
        if found is None or (eq and _OPTIONS[found[0]].convert is None):
            extra.append(token)
            i += 1
            continue
        field_name, positive = found
        opt = _OPTIONS[field_name]
        if opt.convert is None:
            hits.append(_Hit(field_name, i, i + 1, name, None, False, positive))
            i += 1
        elif eq:
            hits.append(_Hit(field_name, i, i + 1, name, inline_value, True))
            i += 1
        elif i + 1 < len(args) and not (opt.optional_value and _not_a_switch_value(args[i + 1])):
            hits.append(_Hit(field_name, i, i + 2, name, args[i + 1], False))
            i += 2
        elif opt.optional_value:
            hits.append(_Hit(field_name, i, i + 1, name, None, False))
            i += 1
        else:
            raise ArgsError(f"{name} needs a value")
    return hits, extra


def _not_a_switch_value(token: str) -> bool:
    return token not in _TRUTHY | _FALSEY | {"auto", "-1"}


@dataclass(frozen=True)
class LlamaArgs:
    """What a recipe's ``args`` ask llama-server for; None where the default applies."""

    model: str | None = None
    ctx_size: int | None = None
    n_gpu_layers: int | str | None = None  # a count, "auto" or "all"
    threads: int | None = None
    parallel: int | None = None
    batch_size: int | None = None
    ubatch_size: int | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    flash_attn: str | None = None  # "on", "off" or "auto"
    no_kv_offload: bool | None = None
    kv_unified: bool | None = None
    swa_full: bool | None = None
    fit: str | None = None  # "on" or "off"
    fit_target: tuple[int, ...] | None = None  # MiB per device, one value = all devices
    fit_ctx: int | None = None
    mmproj: str | None = None
    extra: tuple[str, ...] = field(default=())  # every other token, in order

    @classmethod
    def parse(cls, args: Sequence[str]) -> LlamaArgs:
        """Reads ``args``; raises ArgsError for a value llama-server would refuse."""
        hits, extra = _scan(list(args))
        values: dict[str, Any] = {}
        for hit in hits:
            opt = _OPTIONS[hit.field]
            if opt.convert is None:
                values[hit.field] = hit.positive
            elif hit.value is None:  # bare -fa / --fit: "on", as older builds meant
                values[hit.field] = "on"
            else:
                try:
                    values[hit.field] = opt.convert(hit.value)
                except ValueError:
                    raise ArgsError(f"{hit.spelling}: invalid value {hit.value!r}") from None
        return cls(**values, extra=tuple(extra))

    def get(self, name: str) -> Any:
        """The value llama-server will use: the one given, else its default."""
        value = getattr(self, name)
        return DEFAULTS.get(name) if value is None else value


def _format(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def with_value(args: Sequence[str], option: str, value: Any) -> list[str]:
    """``args`` with ``option`` (a field name such as ``ctx_size``, or any spelling such as
    ``-c``) set to ``value``, edited where it was written and in the same form. Earlier
    occurrences (which llama-server ignores) are dropped; an absent option is appended
    (``--ctx-size 4096``). Flags take True/False; None removes the option."""
    name = _field_of(option)
    if value is None:
        return without(args, name)
    opt = _OPTIONS[name]
    if opt.convert is not None:
        text = _format(value)
        try:
            opt.convert(text)
        except ValueError:
            raise ArgsError(f"{opt.names[-1]}: invalid value {text!r}") from None
    elif not isinstance(value, bool):
        raise ArgsError(f"{opt.names[-1]} is a switch: give True or False")
    elif not value and not opt.negative:
        return without(args, name)
    tokens = list(args)
    hits = [h for h in _scan(tokens)[0] if h.field == name]
    if not hits:
        if opt.convert is None:
            return tokens + [opt.names[-1] if value else opt.negative[-1]]
        return tokens + [opt.names[-1], text]
    last = hits[-1]
    if opt.convert is None:  # the same short/long form, switched on or off
        index = (opt.names if last.positive else opt.negative).index(_normalise(last.spelling))
        target = opt.names if value else opt.negative
        new = [target[min(index, len(target) - 1)]]
    elif last.inline:
        new = [f"{last.spelling}={text}"]
    else:
        new = [last.spelling, text]
    out = tokens[: last.start] + new + tokens[last.end:]
    for hit in reversed(hits[:-1]):
        del out[hit.start: hit.end]
    return out


def without(args: Sequence[str], option: str) -> list[str]:
    """``args`` with every occurrence of ``option`` (and its value) removed."""
    name = _field_of(option)
    tokens = list(args)
    for hit in reversed([h for h in _scan(tokens)[0] if h.field == name]):
        del tokens[hit.start: hit.end]
    return tokens
