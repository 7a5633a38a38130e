"""Every configuration default has one source: ``lectr.settings.config.VARIABLES``."""

import os

from lectr.settings.config import VARIABLES, Settings


def _env_without_lectr() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}


def test_the_dataclass_defaults_are_the_environment_defaults():
    assert Settings() == Settings.from_env(_env_without_lectr())


def test_each_default_is_what_setting_it_explicitly_gives():
    env = _env_without_lectr()
    defaults = Settings.from_env(env)
    for name, (default, _) in VARIABLES.items():
        if not default or name == "LECTR_DATA_DIR" and env.get("XDG_DATA_HOME"):
            continue  # unset means "none" (no database URL, no secret), or XDG_DATA_HOME decides
        assert Settings.from_env({**env, name: default}) == defaults, name


def test_the_disputed_defaults():
    settings = Settings()
    assert settings.limits.busy_poll_us == int(VARIABLES["LECTR_BUSY_POLL_US"][0])
    assert settings.workers == len(os.sched_getaffinity(0))  # LECTR_WORKERS=0: one per core
    assert Settings.from_env({}).data_dir == Settings.from_env({"LECTR_DATA_DIR": VARIABLES["LECTR_DATA_DIR"][0]}).data_dir
    assert Settings.from_env({"XDG_DATA_HOME": "/x"}).data_dir.as_posix() == "/x/lectr"


def test_the_cold_nice_is_clamped_to_what_the_kernel_takes():
    assert Settings.from_env({"LECTR_COLD_NICE": "40"}).admin.cold_nice == 19
    assert Settings.from_env({"LECTR_COLD_NICE": "0"}).admin.cold_nice == 0
