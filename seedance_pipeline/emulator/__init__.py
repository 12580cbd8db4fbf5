"""A local EvoLink (Seedance 2.0) emulator: real HTTP on loopback, no account, no network."""

from .config import DEFAULT_API_KEY, EmulatorConfig
from .server import running_emulator, serve
from .state import EmulatorState

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "EmulatorState", "running_emulator", "serve"]
