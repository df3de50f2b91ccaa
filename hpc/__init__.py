"""xreduce's orchestration: configs, planning, chunk state, backends and the command line.

It reaches the science only through ``reduction``'s public API and never does physics itself.
"""

from typing import Any

__all__ = ["load_config", "run_campaign"]


def load_config(overrides: list[str] | tuple[str, ...] = (), config_dir: Any = None) -> Any:
    """The validated campaign config, as ``xreduce`` would build it from these overrides."""
    from .config import load_config as _load

    return _load(overrides, config_dir)


def run_campaign(cfg: Any, client: Any = None) -> int:
    """Run a campaign from Python, e.g. a notebook: ``run_campaign(load_config([...]), client=client)``.

    With a Dask ``client`` the chunks run on its workers; otherwise on ``cfg.backend``. Returns
    the exit code ``xreduce run`` would (0 all done, 1 some chunks failed).
    """
    from .commands import run

    return run(cfg, client=client)
