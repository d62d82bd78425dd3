"""pytest wiring for shadow comparisons: the ``shadow`` fixture, its options, its verdict.

The logic lives in :mod:`pytest_migsafe.shadow.experiment`. A mismatch does not stop the test body:
the verdict comes after the call phase, so every experiment in the test is recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_migsafe.plugin.notices import notify
from pytest_migsafe.plugin.options import get_setting
from pytest_migsafe.plugin.stash import add_call_phase, add_to_record, recorded_id
from pytest_migsafe.shadow.modes import MODES, check_mode, new_seed
from pytest_migsafe.values import argument_type

if TYPE_CHECKING:
    from pytest_migsafe.shadow.experiment import Shadow

# pytest_migsafe.shadow.experiment is imported by the fixture (and a verdict): a session
# without a shadow experiment does not pay its import at start-up

SEED_KEY = pytest.StashKey[int]()
MODE_KEY = pytest.StashKey[str]()
LAB_KEY = pytest.StashKey["Shadow"]()
_labs_made = False  # the shadow fixture has run in this process: until then no item has a LAB_KEY
_WORKER_SEED = "migsafe_shadow_seed"


def parse_seed(text: str) -> int:
    """A seed: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    """The shadow options: the seed of the order of the paths, and the default mode."""
    group = parser.getgroup("migsafe", "migsafe: migration safety checks")
    group.addoption("--migsafe-shadow-seed", dest="migsafe_shadow_seed", type=argument_type(parse_seed), metavar="N",
                    help="seed the order (control or candidate first) of shadow experiments, to "
                         "rerun one as it failed (default: random per session, printed on "
                         "failure; also $MIGSAFE_SHADOW_SEED).")
    group.addoption("--migsafe-shadow-mode", dest="migsafe_shadow_mode", choices=MODES,
                    help="default mode of shadow experiments: 'fail' (a mismatch fails the test, "
                         "the default) or 'observe' (a mismatch is only reported).")
    parser.addini("migsafe_shadow_mode", "default mode of shadow experiments: fail or observe.",
                  default="fail")


def pytest_configure(config: pytest.Config) -> None:
    """Fix the session's seed (a worker takes the controller's) and the default mode."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and _WORKER_SEED in workerinput:
        seed = workerinput[_WORKER_SEED]
    else:
        seed = get_setting(config, option="migsafe_shadow_seed", env="MIGSAFE_SHADOW_SEED",
                           parse=parse_seed, default=None)
        if seed is None:
            seed = new_seed()
    config.stash[SEED_KEY] = seed
    config.stash[MODE_KEY] = get_setting(config, option="migsafe_shadow_mode",
                                         ini="migsafe_shadow_mode", parse=check_mode, default="fail")
    add_call_phase(config, ShadowPhase.start, order=3)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Send the controller's seed to each pytest-xdist worker, so all use one."""
    node.workerinput[_WORKER_SEED] = node.config.stash[SEED_KEY]


def _hint(seed: int) -> str:
    return f"rerun with --migsafe-shadow-seed {seed}"


@pytest.fixture
def shadow(request: pytest.FixtureRequest) -> Shadow:
    """Run old and new paths side by side: ``shadow.run(name, control, candidate, *args, **kwargs)``.

    Each path runs in a savepoint of ``migsafe_db`` (when the test uses it) and with
    ``migsafe_redis`` flushed and measured (when the test uses it). A mismatch fails the
    test after its body has run; ``shadow.mode = "observe"`` only reports.
    """
    global _labs_made
    from pytest_migsafe.shadow.experiment import Shadow

    config = request.config
    session = request.getfixturevalue("migsafe_db") if "migsafe_db" in request.fixturenames else None
    cache = None
    if "migsafe_redis" in request.fixturenames:
        cache = redis_client(request.getfixturevalue("migsafe_redis"))
    seed = config.stash[SEED_KEY]
    lab = Shadow(seed=seed, label=recorded_id(config, request.node.nodeid), mode=config.stash[MODE_KEY],
                 session=session, flush=cache, cache=cache, hint=_hint(seed))
    _labs_made = True
    request.node.stash[LAB_KEY] = lab
    return lab


def redis_client(value: Any) -> Any:
    """The Redis client in what ``migsafe_redis`` gives: the value itself or its ``.client``."""
    if hasattr(value, "flushdb"):
        return value
    client = getattr(value, "client", None)
    if hasattr(client, "flushdb"):
        return client
    raise TypeError(f"shadow: migsafe_redis gave a {type(value).__name__}, expected a Redis client")


class ShadowPhase:
    """The experiments of one test: recorded, then a verdict on the test."""

    def __init__(self, item: pytest.Item, lab: Shadow) -> None:
        self.item = item
        self.lab = lab

    @classmethod
    def start(cls, item: pytest.Item) -> ShadowPhase | None:
        """A phase for a test that uses the ``shadow`` fixture, else None."""
        lab = item.stash.get(LAB_KEY, None) if _labs_made else None
        return None if lab is None else cls(item, lab)

    def stop(self) -> None:
        """Record every experiment that ran."""
        figures = self.lab.figures()
        add_to_record(self.item, lambda record: record.shadows.extend(figures))

    def failures(self) -> list[str]:
        """Warnings for experiments in observe mode; the mismatches that fail the test."""
        lab = self.lab
        from pytest_migsafe.shadow.experiment import ShadowMismatchWarning

        for experiment in lab.observed():
            notify(ShadowMismatchWarning("observe mode: " + experiment.describe(failing_only=False, hint=lab.hint)),
                   str(self.item.path), 0, self.item)
        message = lab.failure_message(verbose=self.item.config.get_verbosity() > 0)
        return [] if message is None else [message]

