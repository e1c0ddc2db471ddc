"""The ``sbsopt`` command line.

Subcommands live in their own modules and are imported only when invoked, so that
``sbsopt oracle`` starts without paying for the simulator or the plotting stack.

Exit codes: 0 success, 2 bad input (usage, invalid values, malformed files),
1 internal failure or a missing optional dependency (the message names the pip extra).
Errors print as one line on stderr; set ``SBSOPT_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from sbsopt._optional import missing_extra
from sbsopt.errors import InvalidInputError, SbsoptError

__all__ = ["main", "cli", "EXIT_BAD_INPUT", "EXIT_INTERNAL"]

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1

# name -> "module:attribute"; each module defines one click command.
_COMMANDS: dict[str, str] = {
    "run": "sbsopt.cli.run:run",
    "cost": "sbsopt.cli.cost:cost",
    "calibrate": "sbsopt.cli.calibrate:calibrate",
    "validate": "sbsopt.cli.validate:validate",
    "oracle": "sbsopt.cli.oracle:oracle",
    "simulate": "sbsopt.cli.simulate:simulate",
    "compare": "sbsopt.cli.simulate:compare",
    "plan": "sbsopt.cli.plan:plan",
    "sweep": "sbsopt.cli.plan:sweep",
    "serve": "sbsopt.cli.serve:serve",
    "mock-engine": "sbsopt.cli.serve:mock_engine",
    "replay": "sbsopt.cli.serve:replay",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sbsopt")
def cli() -> None:
    """sbsopt: staggered-window scheduling for DP-attention + EP-MoE LLM serving."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The process exit code: 0, :data:`EXIT_BAD_INPUT` or :data:`EXIT_INTERNAL`.
    """
    try:
        cli.main(args=argv, prog_name="sbsopt", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("sbsopt: aborted", err=True)
        return EXIT_INTERNAL
    except click.ClickException as exc:
        click.echo(f"sbsopt: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except InvalidInputError as exc:
        click.echo(f"sbsopt: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except SbsoptError as exc:
        _maybe_traceback()
        click.echo(f"sbsopt: error: {exc}", err=True)
        return EXIT_INTERNAL
    except (BrokenPipeError, KeyboardInterrupt):
        return EXIT_INTERNAL
    except ModuleNotFoundError as exc:
        # a command importing an optional package directly still names the extra to install
        _maybe_traceback()
        missing = missing_extra(exc)
        message = f"error: {missing}" if missing else f"internal error: {type(exc).__name__}: {exc}"
        click.echo(f"sbsopt: {message}", err=True)
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        _maybe_traceback()
        click.echo(f"sbsopt: internal error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_INTERNAL
    return 0


def _maybe_traceback() -> None:
    if os.environ.get("SBSOPT_DEBUG"):
        import traceback

        traceback.print_exc()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
