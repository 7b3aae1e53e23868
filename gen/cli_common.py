"""What every ``lutra`` command group shares: the one-line usage error, an argparse that raises
it, block parameter flags, block configurations from a command line, ``--force``.

Each command group (``gen/cli.py``'s core commands, ``cli_build``, ``cli_prove``, ``cli_run``,
``cli_soak``) imports this module and exports a ``COMMANDS`` table; ``gen/cli.py`` joins them, so
no module imports the command line it belongs to.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .blocks import BlockSpec, blocks, get_block
from .config import BlockConfig, load_config, validate_params
from .outputs import DEFAULT_REPORTS_DIR

__all__ = ["UsageError", "Parser", "add_block_flags", "parse_block_flags", "configs_from_args",
           "add_force", "add_report_out", "sizes", "size_list", "int_list", "mhz", "seed_number"]


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as ``UsageError`` (one line, status 2)."""

    def error(self, message):
        raise UsageError(message)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def sizes(text: str, count: int = 2) -> tuple[int, ...]:
    """``count`` positive integers joined by ``x`` (``8x8``, ``64x256x64``), an argparse type."""
    parts = text.split("x")
    if len(parts) != count or not all(p.isdigit() and int(p) > 0 for p in parts):
        example = "x".join(["4", "4", "4"][:count])
        raise argparse.ArgumentTypeError(f"expected {count} positive integers joined by x "
                                         f"(e.g. {example}), not {text!r}")
    return tuple(int(p) for p in parts)


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers (``1,2,4,8``), an argparse type."""
    parts = text.split(",")
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas "
                                         f"(e.g. 1,2,4), not {text!r}")
    return [int(p) for p in parts]


def mhz(text: str) -> float:
    """A clock frequency: a positive finite number of MHz, an argparse type."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of MHz (e.g. 50), "
                                         f"not {text!r}")
    return value


def seed_number(text: str) -> int:
    """A random or placement seed: a non-negative integer, an argparse type."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {text!r}")
    return int(text)


def size_list(text: str) -> list[tuple[int, int]]:
    """Comma-separated ``RxC`` array sizes (``4x4,8x8``), an argparse type."""
    try:
        return [sizes(a) for a in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected RxC sizes separated by commas (e.g. 4x4,8x8), "
                                         f"not {text!r}") from None


def add_block_flags(parser: argparse.ArgumentParser, block: BlockSpec) -> None:
    """One ``--flag`` per parameter of ``block`` (defaults left unset: only given ones count)."""
    group = parser.add_argument_group(f"{block.name} parameters")
    for p in block.params:
        kind = _bool if p.kind is bool else p.kind
        extra = f" (one of {', '.join(map(str, p.choices))})" if p.choices else ""
        group.add_argument(p.flag, dest=f"param_{p.name}", type=kind, default=None,
                           metavar=p.kind.__name__.upper(),
                           help=f"{p.help}{extra}; default {p.default}")


def parse_block_flags(block: BlockSpec, argv: list[str], prog: str) -> dict:
    """Parse ``--param value`` flags of ``block`` into a dict of the given ones."""
    parser = Parser(prog=f"{prog} {block.name}", add_help=False)
    add_block_flags(parser, block)
    namespace = parser.parse_args(argv)
    return {p.name: getattr(namespace, f"param_{p.name}") for p in block.params
            if getattr(namespace, f"param_{p.name}") is not None}


def configs_from_args(args, prog: str) -> list[BlockConfig]:
    """Configurations named by ``BLOCK [--param V ...]`` and/or ``--config FILE``."""
    if args.config is not None:
        configs = load_config(args.config)
        if args.block is not None:
            configs = [c for c in configs if c.name == args.block]
            if not configs:
                raise UsageError(f"{args.config}: has no [{args.block}] table")
        if args.block is not None and args.params:
            overrides = parse_block_flags(configs[0].block, args.params, prog)
            merged = {**configs[0].params, **overrides}
            configs = [validate_params(configs[0].block, merged)]
        elif args.params:
            raise UsageError("parameter flags need a block name, e.g. 'gemm --rows 4'")
        return configs
    if args.block is None:
        raise UsageError("name a block (one of: " + ", ".join(blocks()) + ") or give --config")
    try:
        block = get_block(args.block)
    except KeyError as error:
        raise UsageError(error.args[0]) from None
    return [validate_params(block, parse_block_flags(block, args.params, prog))]


def add_force(parser: argparse.ArgumentParser) -> None:
    """The ``--force`` flag of every command that writes an output directory."""
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty directory Lutra has not written before "
                             "(files of other names there are left alone)")


def add_report_out(parser: argparse.ArgumentParser, files: str) -> None:
    """A benchmark's ``--out DIR`` for its report ``files`` and ``--force`` (see
    :func:`gen.outputs.report_files`); ``args.out`` is ``None`` for the default directory."""
    parser.add_argument("--out", type=Path,
                        help=f"directory for {files} (default {DEFAULT_REPORTS_DIR}, Lutra's own; "
                             f"elsewhere a file of those names Lutra did not write is refused)")
    parser.add_argument("--force", action="store_true",
                        help="replace files of those names in --out that Lutra did not write")
