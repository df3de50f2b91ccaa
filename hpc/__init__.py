"""xreduce's orchestration: configs, planning, chunk state, backends and the command line.

It reaches the science only through ``reduction``'s public API and never does physics itself.
"""

__all__: list[str] = []
