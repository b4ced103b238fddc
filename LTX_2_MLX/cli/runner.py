"""How every `ltx2-mlx` command ends: one line per error, exit codes shells expect, and the
same cleanup on SIGTERM as on Ctrl-C.

- A user error (a bad option, a wrong file: click's errors, ValueError and CheckpointError,
  OSError) prints `error: <what to do>` and exits 1 (2 for a bad command line).
- Ctrl-C exits 130 and SIGTERM 143; both unwind the stack, so atomic writers delete their
  partial files.
- Anything else is a bug: one line saying where the full traceback was written
  (`--debug` shows it instead).
"""

import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import click

DEBUG_ENVIRONMENT = "LTX2_MLX_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every `finally` runs as on Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _write_traceback(error: BaseException) -> str:
    handle, path = tempfile.mkstemp(prefix=f"ltx2-mlx-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    with os.fdopen(handle, "w") as log:
        log.write(f"ltx2-mlx {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(error, file=log)
    return path


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def run_cli(invoke: Callable[[], object], debug: Callable[[], bool]) -> int:
    """Run a click command in non-standalone mode and turn its outcome into an exit code."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _main_thread() else None
    try:
        result = invoke()
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.Abort as abort:
        terminated = isinstance(abort.__cause__, Terminated) or isinstance(abort, Terminated)
        click.echo(f"\n{'stopped (SIGTERM)' if terminated else 'interrupted'}: no output was written", err=True)
        return 143 if terminated else 130
    except KeyboardInterrupt as interrupt:
        click.echo(f"\n{'stopped (SIGTERM)' if isinstance(interrupt, Terminated) else 'interrupted'}: "
                   "no output was written", err=True)  # fmt: skip
        return 143 if isinstance(interrupt, Terminated) else 130
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "ltx2-mlx"
        _error(f"{_one_line(error.format_message())} (see `{command} --help`)")
        return error.exit_code
    except click.ClickException as error:
        _error(_one_line(error.format_message()))
        return error.exit_code
    except (ValueError, OSError) as error:
        if debug():
            raise
        message = _one_line(error)
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
        _error(message)
        return 1
    except Exception as error:
        if debug():
            raise
        log = _write_traceback(error)
        _error(
            f"internal error ({type(error).__name__}: {_one_line(error)[:200]}). The full traceback is in {log}; "
            "rerun with `ltx2-mlx --debug ...` to see it here, and please report it."
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def debug_requested() -> bool:
    return os.environ.get(DEBUG_ENVIRONMENT, "") not in ("", "0")
