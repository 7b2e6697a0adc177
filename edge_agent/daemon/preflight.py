"""Checks of the set-up before the agent starts: one clear line per problem, no traceback.

``farmiq agent run`` and ``farmiq agent check-config`` run the same checks, so a config
that check-config passes also starts. A problem exits with ``SETUP_EXIT_CODE``, which the
systemd unit lists in ``RestartPreventExitStatus=``: a gateway whose trust root is missing
is not restarted every 5 s forever; it stays failed, with the line in its journal, until
an operator fixes the file and restarts it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from edge_agent.config import AgentConfig

# The exit code of a bad set-up (the same as a configuration that does not validate).
SETUP_EXIT_CODE = 2


def trust_root_problem(path: Path) -> str | None:
    """None when ``path`` holds a usable trust root, else what is wrong with it."""
    from farmiq.bundle.trust import TrustRoot

    try:
        TrustRoot.load(path)
    except FileNotFoundError:
        return (
            f"trust root {path}: file not found (provision the gateway, or set trust_root "
            "in the agent config)"
        )
    except IsADirectoryError:
        return f"trust root {path}: is a directory, not a file"
    except PermissionError:
        return f"trust root {path}: permission denied (the agent runs as user farmiq)"
    except OSError as exc:
        return f"trust root {path}: cannot be read: {exc.strerror or exc}"
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "document"
        return f"trust root {path}: not a trust root ({where}: {first.get('msg')})"
    except ValueError as exc:  # TrustError and other parse errors
        return f"trust root {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def state_dir_problem(path: Path) -> str | None:
    """None when the agent can write ``path`` (or create it); nothing is created here."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe == path and not path.is_dir():
        return f"state dir {path}: exists and is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        return f"state dir {path}: {what} by this user"
    return None


def setup_problems(cfg: AgentConfig) -> list[str]:
    """Every problem that keeps the agent from starting, one line each."""
    return [p for p in (trust_root_problem(cfg.trust_root), state_dir_problem(cfg.state_dir)) if p]
