"""Check a vLLM server command line with vLLM's own parser, before anything starts.

Run as ``python -m daemon.engine.vllm_args ARGS...`` (a child process: importing
vLLM is heavy, and the daemon need not carry it). Exit 0 when vLLM would accept
the arguments; otherwise exit 1 with vLLM's complaint on one stderr line, marked ``vllm-args:``.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class Refused(Exception):
    pass


def refuse(message: str) -> NoReturn:
    raise Refused(message)


def check(argv: list[str]) -> str | None:
    """vLLM's complaint about ``argv``, or None when it would start with them."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm"))
    parser.error = refuse  # type: ignore[method-assign]
    try:
        validate_parsed_serve_args(parser.parse_args(argv))
    except (Refused, ValueError, TypeError) as exc:
        return " ".join(str(exc).split())
    return None


def main() -> None:
    problem = check(sys.argv[1:])
    if problem:
        sys.stderr.write(f"vllm-args: {problem}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
