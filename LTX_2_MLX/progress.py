"""The package's progress bars and the one switch that silences them all: in a parallel run
every process but rank 0 is quiet (distributed/launch.py), so the bars are printed once."""

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Hide (True) or show again (False) every progress bar of this process."""
    global _quiet
    _quiet = quiet


def progress_bar(*args, disable: bool = False, **kwargs) -> tqdm:
    """A tqdm bar (same arguments), hidden when `disable` is true or this process is quiet."""
    return tqdm(*args, disable=disable or _quiet, **kwargs)
