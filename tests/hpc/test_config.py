"""The campaign config: composition, validation messages, output default, hash, CLI exit codes."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from hpc import cli
from hpc.config import (
    LocalBackendConfig,
    config_from_dict,
    config_hash,
    load_config,
    shipped_config_dir,
    to_dict,
    to_json,
    to_yaml,
)
from hpc.errors import ConfigError, PlanError
from reduction.azint.config import Azint2dConfig
from reduction.azint.pixels import SPLITTINGS
from reduction.azint.units import RADIAL_UNITS
from reduction.errors import XReduceError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An experiment folder: <tmp>/ma1234/id11/20240101/{RAW_DATA/sample, SCRIPTS/geo.poni, mask.npy}."""
    session = tmp_path / "ma1234" / "id11" / "20240101"
    (session / "RAW_DATA" / "sample").mkdir(parents=True)
    (session / "SCRIPTS").mkdir()
    (session / "SCRIPTS" / "geo.poni").write_text("# Nota: PONI file\nDistance: 0.1\n")
    (session / "SCRIPTS" / "mask.npy").write_bytes(b"mask v1")
    return session


def base(data: Path, *extra: str) -> list[str]:
    return ["campaign=example", f"campaign.raw_data={data / 'RAW_DATA' / 'sample'}", "campaign.detector=pilatus",
            f"reduction.poni={data / 'SCRIPTS' / 'geo.poni'}", *extra]


def error(overrides: list[str], config_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(overrides, config_dir)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


# -- loading ------------------------------------------------------------------------------------
def test_load_config_is_typed_resolved_absolute_and_read_only(data: Path) -> None:
    cfg = load_config(base(data))
    assert cfg.reduction.kind == "azint1d" and cfg.reduction.npt == 1000 and isinstance(cfg.reduction.npt, int)
    assert cfg.reduction.unit == "q_nm^-1" and cfg.reduction.splitting == "bbox"
    assert cfg.reduction.error_model == "poisson" and cfg.reduction.solid_angle is True
    assert cfg.campaign.raw_data == str(data / "RAW_DATA" / "sample")
    assert cfg.campaign.scans == "all" and cfg.campaign.datasets is None and cfg.campaign.monitor is None
    assert cfg.backend.name == "local" and cfg.backend.workers == 1
    assert OmegaConf.get_type(cfg.backend) is LocalBackendConfig
    assert cfg.partition.frames_per_chunk == 500 and cfg.merge.mode == "vds"
    with pytest.raises(ReadonlyConfigError):
        cfg.reduction.npt = 5


def test_overrides_and_group_choice(data: Path) -> None:
    cfg = load_config(base(data, "reduction=azint2d", "reduction.npt_azim=72", "reduction.radial_range=[1,30]",
                           "backend.workers=8", "partition.frames_per_chunk=100", "merge.mode=copy",
                           "campaign.scans='1-20,25'", "campaign.monitor=mon"))
    assert OmegaConf.get_type(cfg.reduction) is Azint2dConfig
    assert (cfg.reduction.kind, cfg.reduction.unit, cfg.reduction.npt_rad, cfg.reduction.npt_azim) == (
        "azint2d", "2th_deg", 500, 72)
    assert list(cfg.reduction.radial_range) == [1.0, 30.0]
    assert (cfg.backend.workers, cfg.partition.frames_per_chunk, cfg.merge.mode) == (8, 100, "copy")
    assert cfg.campaign.scans == "1-20,25" and cfg.campaign.monitor == "mon"


def test_relative_paths_are_taken_from_the_current_directory(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data)
    cfg = load_config(["campaign=example", "campaign.raw_data=RAW_DATA/sample", "campaign.detector=p",
                       "reduction.poni=SCRIPTS/geo.poni", "reduction.mask=SCRIPTS/mask.npy::/entry/mask",
                       "campaign.output=out"])
    assert cfg.campaign.raw_data == str(data / "RAW_DATA" / "sample")
    assert cfg.reduction.poni == str(data / "SCRIPTS" / "geo.poni")
    assert cfg.reduction.mask == f"{data / 'SCRIPTS' / 'mask.npy'}::/entry/mask"
    assert cfg.campaign.output == str(data / "out")


def test_every_shipped_option_composes(data: Path) -> None:
    root = shipped_config_dir()
    assert root == REPO / "configs" or root.name == "configs"
    for group in ("reduction", "backend", "partition", "merge"):
        for option in sorted((root / group).glob("*.yaml")):
            load_config(base(data, f"{group}={option.stem}"))
    load_config(["campaign=demo", f"campaign.raw_data={data / 'RAW_DATA'}",
                 f"reduction.poni={data / 'SCRIPTS' / 'geo.poni'}"])


# -- output default -----------------------------------------------------------------------------
def test_output_default_is_processed_data_beside_raw_data(data: Path) -> None:
    cfg = load_config(base(data))
    assert cfg.campaign.output == str(data / "PROCESSED_DATA" / "xreduce" / "example")
    cfg = load_config(base(data, f"campaign.raw_data={data / 'RAW_DATA'}", "campaign.name=run2"))
    assert cfg.campaign.output == str(data / "PROCESSED_DATA" / "xreduce" / "run2")


def test_output_default_outside_raw_data(data: Path) -> None:
    cfg = load_config(base(data, f"campaign.raw_data={data / 'SCRIPTS'}"))
    assert cfg.campaign.output == str(data / "xreduce_output" / "example")


# -- validation messages ------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["reduction.nptt=3", "+reduction.nptt=3"])
def test_unknown_key_is_named_with_suggestion_and_valid_keys(data: Path, override: str) -> None:
    message = error(base(data, override))
    assert "unknown key reduction.nptt" in message and "did you mean npt?" in message
    assert "valid keys of reduction:" in message and "npt_rad" not in message
    assert all(key in message for key in ("poni", "unit", "splitting", "error_model"))


def test_unknown_top_level_group(data: Path) -> None:
    message = error(base(data, "+campain.name=x"))
    assert "unknown key campain" in message and "did you mean campaign?" in message


@pytest.mark.parametrize("override, key, value, expected", [
    ("reduction.npt=abc", "reduction.npt", "'abc'", "an integer"),
    ("reduction.npt=2.5", "reduction.npt", "2.5", "an integer"),
    ("reduction.solid_angle=maybe", "reduction.solid_angle", "'maybe'", "true or false"),
    ("reduction.radial_range=1", "reduction.radial_range", "1", "a list of numbers or null"),
    ("reduction.polarization_factor=high", "reduction.polarization_factor", "'high'", "a number or null"),
    ("partition.frames_per_chunk=many", "partition.frames_per_chunk", "'many'", "an integer"),
    ("backend.workers=[1,2]", "backend.workers", "[1, 2]", "an integer"),
    ("reduction.radial_range=[a,1]", "reduction.radial_range[0]", "'a'", "a number"),
    ("reduction.npt=null", "reduction.npt", "null", "an integer"),
])
def test_wrong_type_names_key_value_and_expected_type(data: Path, override: str, key: str, value: str,
                                                      expected: str) -> None:
    message = error(base(data, override))
    assert f"{key}={value}" in message and "wrong type" in message and f"expected {expected}" in message


def test_missing_mandatory_values_are_named_with_an_example(data: Path) -> None:
    message = error(["campaign=example", "campaign.detector=pilatus"])
    assert message.startswith("campaign.raw_data is mandatory and not set")
    assert "e.g. campaign.raw_data=" in message and "reduction.poni" in message
    message = error(base(data)[:-1])
    assert "reduction.poni is mandatory" in message and "e.g. reduction.poni=" in message


def test_no_campaign_chosen() -> None:
    message = error([])
    assert "no campaign chosen" in message and "campaign=<name>" in message and "example" in message


@pytest.mark.parametrize("override, allowed", [
    ("reduction.unit=q_nm", RADIAL_UNITS),
    ("reduction.splitting=ful", SPLITTINGS),
    ("reduction.error_model=gauss", ("poisson", "null")),
    ("reduction.engine=cuda", ("auto", "numpy", "opencl")),
    ("merge.mode=vdss", ("vds", "copy")),
    ("reduction.kind=azint3d", ("azint1d", "azint2d")),
])
def test_enum_like_values_list_the_allowed_ones(data: Path, override: str, allowed: tuple[str, ...]) -> None:
    key, value = override.split("=")
    message = error(base(data, override))
    assert f"{key}={value!r} is not allowed" in message
    assert message.endswith("allowed: " + ", ".join(str(a) for a in allowed)) or \
        all(a in message for a in allowed)


@pytest.mark.parametrize("device", ["gpu0", "0", "0:a", "cuda:0"])
def test_device_must_be_a_known_request(data: Path, device: str) -> None:
    message = error(base(data, f"reduction.device={device}"))
    assert f"reduction.device={device!r} must be auto, cpu, gpu or 'platform:device'" in message


def test_engine_and_device_do_not_change_the_hash(data: Path) -> None:
    """Engines agree within float32 tolerance: switching one must not redo finished chunks."""
    hashes = {config_hash(load_config(base(data, *extra))) for extra in
              ([], ["reduction.engine=opencl"], ["reduction.engine=numpy", "reduction.device=0:1"])}
    assert len(hashes) == 1


def test_unit_suggestion(data: Path) -> None:
    assert "did you mean q_nm^-1?" in error(base(data, "reduction.unit=q_nm"))


def test_kind_must_match_the_group_chosen(data: Path) -> None:
    message = error(base(data, "reduction.kind=azint2d"))
    assert "reduction.kind=azint2d" in message and "reduction=azint2d" in message


def test_unknown_group_option_is_named_with_the_available_ones(data: Path) -> None:
    message = error(base(data, "reduction=azint3d"))
    assert "reduction=azint3d" in message and "azint1d, azint2d" in message and "did you mean azint2d?" in message
    assert "backend=kubernetes" in error(base(data, "backend=kubernetes"))


@pytest.mark.parametrize("key", ["reduction.poni", "reduction.mask", "reduction.dark", "reduction.flat"])
def test_nonexistent_files_are_named(data: Path, key: str) -> None:
    message = error(base(data, f"{key}=nowhere/geo.bin"))
    assert message.startswith(f"{key}=nowhere/geo.bin: no such file") and str(Path.cwd()) in message


def test_nonexistent_raw_data(data: Path) -> None:
    message = error(base(data, f"campaign.raw_data={data / 'nope'}"))
    assert message.startswith(f"campaign.raw_data={data / 'nope'}: no such directory")


@pytest.mark.parametrize("key", ["reduction.npt", "partition.frames_per_chunk", "backend.workers"])
@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_counts(data: Path, key: str, value: int) -> None:
    assert f"{key}={value} must be a positive integer" in error(base(data, f"{key}={value}"))


@pytest.mark.parametrize("key", ["reduction.npt_rad", "reduction.npt_azim"])
def test_non_positive_2d_counts(data: Path, key: str) -> None:
    assert f"{key}=0 must be a positive integer" in error(base(data, "reduction=azint2d", f"{key}=0"))


@pytest.mark.parametrize("key", ["reduction.radial_range", "reduction.azimuth_range"])
@pytest.mark.parametrize("value", ["[3,1]", "[1,1]", "[1,2,3]", "[1]"])
def test_ranges_must_be_pairs_with_min_below_max(data: Path, key: str, value: str) -> None:
    assert f"{key}=" in error(base(data, f"{key}={value}"))


def test_polarization_factor_range(data: Path) -> None:
    assert "reduction.polarization_factor=1.5 must be between -1 and 1" in error(
        base(data, "reduction.polarization_factor=1.5"))
    assert load_config(base(data, "reduction.polarization_factor=0.99")).reduction.polarization_factor == 0.99


@pytest.mark.parametrize("scans", ["all", "7", "1-20,25", "40-", "3.2"])
def test_scan_selections_accepted(data: Path, scans: str) -> None:
    assert load_config(base(data, f"campaign.scans='{scans}'")).campaign.scans == scans


@pytest.mark.parametrize("scans", ["x", "5-1", "1,,2", "1-2-3"])
def test_scan_selection_syntax(data: Path, scans: str) -> None:
    assert error(base(data, f"campaign.scans='{scans}'")).startswith("campaign.scans:")


def test_unquoted_comma_override_asks_for_quotes(data: Path) -> None:
    message = error(base(data, "campaign.scans=1-20,25"))
    assert "'campaign.scans=1-20,25'" in message and 'campaign.scans="1-20,25"' in message


def test_override_grammar_error_names_the_override(data: Path) -> None:
    message = error(base(data, "reduction.unit=q'\"x"))  # no quoting gives it back
    assert "cannot parse override 'reduction.unit=q\\'\"x'" in message
    assert "quote a value with special characters" in message
    # a value the grammar takes once quoted is quoted; the error names it as typed
    message = error(base(data, "reduction.npt=1=2"))
    assert "reduction.npt=1=2 in override \"reduction.npt=1=2\": wrong type, expected an integer" in message


@pytest.mark.parametrize("override, fragment", [
    ("campaign.name=a/b", "campaign.name='a/b' must be a file-name-safe label"),
    ("campaign.datasets=[]", "campaign.datasets is empty"),
    ("campaign.datasets=[/abs/*.h5]", "must be a glob relative to campaign.raw_data"),
    ("campaign.detector=' '", "campaign.detector is empty"),
])
def test_campaign_values(data: Path, override: str, fragment: str) -> None:
    assert fragment in error(base(data, override))


def test_interpolation_errors_are_config_errors(data: Path) -> None:
    assert error(base(data, "reduction.npt=${campaign.name}")).startswith("reduction.npt:")


# -- a user's --config-dir ----------------------------------------------------------------------
def test_user_campaign_in_config_dir(data: Path, tmp_path: Path) -> None:
    user = tmp_path / "my-configs"
    (user / "campaign").mkdir(parents=True)
    (user / "campaign" / "my_exp.yaml").write_text(
        f"name: my_exp\nraw_data: {data / 'RAW_DATA'}\ndetector: eiger\nmonitor: mon\nscans: 1-3\n")
    cfg = load_config(["campaign=my_exp", f"reduction.poni={data / 'SCRIPTS' / 'geo.poni'}",
                       "campaign.scans=2"], user)
    assert (cfg.campaign.name, cfg.campaign.detector, cfg.campaign.monitor, cfg.campaign.scans) == (
        "my_exp", "eiger", "mon", "2")
    assert cfg.campaign.output == str(data / "PROCESSED_DATA" / "xreduce" / "my_exp")


def test_user_files_are_validated_by_the_schema(data: Path, tmp_path: Path) -> None:
    (tmp_path / "campaign").mkdir()
    (tmp_path / "campaign" / "typo.yaml").write_text(f"name: t\nraw_data: {data}\ndetectr: eiger\n")
    message = error(["campaign=typo"], tmp_path)
    assert "unknown key campaign.detectr in campaign/typo.yaml (did you mean detector?)" in message
    (tmp_path / "campaign" / "wrong.yaml").write_text(f"name: t\nraw_data: {data}\ndetector: [a, b]\n")
    message = error(["campaign=wrong"], tmp_path)
    assert "campaign.detector=['a', 'b'] in campaign/wrong.yaml: wrong type, expected a string" in message


def test_global_package_campaign_sets_several_groups(data: Path, tmp_path: Path) -> None:
    (tmp_path / "campaign").mkdir()
    (tmp_path / "campaign" / "full.yaml").write_text(f"""# @package _global_
defaults:
  - override /reduction: azint2d
  - _self_
campaign:
  name: full
  raw_data: {data / 'RAW_DATA'}
  detector: eiger
reduction:
  poni: {data / 'SCRIPTS' / 'geo.poni'}
  npt_azim: 90
backend:
  workers: 4
""")
    cfg = load_config(["campaign=full", "backend.workers=2"], tmp_path)
    assert (cfg.reduction.kind, cfg.reduction.npt_azim, cfg.backend.workers) == ("azint2d", 90, 2)


def test_user_dir_is_searched_before_the_shipped_configs(data: Path, tmp_path: Path) -> None:
    (tmp_path / "reduction").mkdir()
    (tmp_path / "reduction" / "azint1d.yaml").write_text("defaults:\n  - /schema/reduction/azint1d@_here_\n"
                                                          "  - _self_\nnpt: 77\nponi: ???\n")
    (tmp_path / "reduction" / "fine.yaml").write_text("defaults: [azint1d, _self_]\nnpt: 5000\n")
    assert load_config(base(data), tmp_path).reduction.npt == 77
    assert load_config(base(data, "reduction=fine"), tmp_path).reduction.npt == 5000


def test_user_reduction_without_a_schema_gets_a_hint(data: Path, tmp_path: Path) -> None:
    (tmp_path / "reduction").mkdir()
    (tmp_path / "reduction" / "bare.yaml").write_text("kind: azint1d\nnpt: 5\n")
    message = error(base(data, "reduction=bare"), tmp_path)
    assert "unknown key reduction.npt in reduction/bare.yaml" in message and "defaults: [azint1d, _self_]" in message


def test_missing_config_dir(tmp_path: Path) -> None:
    assert "--config-dir" in error(["campaign=example"], tmp_path / "nope")


# -- hash and provenance ------------------------------------------------------------------------
def test_config_hash_follows_file_content_not_path_or_orchestration(data: Path, tmp_path: Path) -> None:
    poni = data / "SCRIPTS" / "geo.poni"
    reference = config_hash(load_config(base(data)))
    assert len(reference) == 64 and reference == config_hash(load_config(base(data)))
    for same in ("backend.workers=7", "partition.frames_per_chunk=10", "merge.mode=copy",
                 f"campaign.output={tmp_path / 'elsewhere'}", "campaign.name=other", "reduction.engine=numpy"):
        assert config_hash(load_config(base(data, same))) == reference, same
    moved = tmp_path / "moved.poni"
    moved.write_bytes(poni.read_bytes())
    assert config_hash(load_config(base(data, f"reduction.poni={moved}"))) == reference
    for other in ("reduction.npt=999", "reduction=azint2d", "campaign.monitor=mon", "campaign.detector=eiger",
                  f"reduction.mask={data / 'SCRIPTS' / 'mask.npy'}"):
        assert config_hash(load_config(base(data, other))) != reference, other
    cfg = load_config(base(data))
    poni.write_text(poni.read_text() + "Rot1: 0.01\n")  # edited in place: same path, new content
    assert config_hash(cfg) != reference


def test_mask_content_enters_the_hash(data: Path) -> None:
    cfg = load_config(base(data, f"reduction.mask={data / 'SCRIPTS' / 'mask.npy'}"))
    before = config_hash(cfg)
    (data / "SCRIPTS" / "mask.npy").write_bytes(b"mask v2")
    assert config_hash(cfg) != before


def test_dumps_round_trip(data: Path) -> None:
    cfg = load_config(base(data, "reduction=azint2d", "reduction.azimuth_range=[-90,90]"))
    assert config_from_dict(json.loads(to_json(cfg))) == cfg
    assert config_from_dict(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg)))) == cfg
    assert to_dict(cfg)["reduction"]["azimuth_range"] == [-90.0, 90.0]
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert config_hash(config_from_dict(to_dict(cfg))) == config_hash(cfg)


def test_config_from_dict_validates(data: Path) -> None:
    good = to_dict(load_config(base(data)))
    good["reduction"]["npt"] = "many"
    with pytest.raises(ConfigError, match=r"reduction.npt='many': wrong type"):
        config_from_dict(good)
    good["reduction"]["npt"] = 10
    good["backend"]["name"] = "slurmm"
    with pytest.raises(ConfigError, match=r"backend.name='slurmm' is not allowed.*allowed: local"):
        config_from_dict(good)
    good["backend"]["name"] = "local"
    good["reduction"]["poni"] = "/nowhere/geo.poni"
    assert config_from_dict(good, check_paths=False).reduction.poni == "/nowhere/geo.poni"


# -- packaging ----------------------------------------------------------------------------------
def test_pyproject_ships_configs_and_every_package() -> None:
    """Wheels carry configs/ as hpc/configs: a package-dir mapping, which needs an explicit package list."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools.get("package-dir", {}).get("hpc.configs") == "configs", (
        "pyproject.toml must install configs/ as hpc/configs (see docs/config.md, 'Where the configs live')")
    packages = {".".join(p.relative_to(REPO).parent.parts) for name in ("hpc", "reduction")
                for p in (REPO / name).rglob("__init__.py")}
    packages |= {"hpc.configs", *(f"hpc.configs.{d.name}" for d in (REPO / "configs").iterdir() if d.is_dir())}
    missing = packages - set(setuptools["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert "*.yaml" in setuptools["package-data"].get("*", []) + setuptools["package-data"].get("hpc.configs", [])


# -- command line -------------------------------------------------------------------------------
@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in for hpc.commands that records its calls and returns ``commands.code``."""
    fake = types.SimpleNamespace(calls=[], code=0)

    def record(name: str):
        def call(*args, **kwargs):
            fake.calls.append((name, args, kwargs))
            if isinstance(fake.code, BaseException):
                raise fake.code
            return fake.code
        return call

    module = types.ModuleType("hpc.commands")
    for name in ("plan", "run", "status", "merge", "demo", "worker"):
        setattr(module, name, record(name))
    monkeypatch.setitem(sys.modules, "hpc.commands", module)
    return fake


@pytest.mark.parametrize("command", ["plan", "run", "merge", "status"])
def test_cli_passes_a_validated_config(data: Path, commands: types.SimpleNamespace, command: str) -> None:
    assert cli.main([command, *base(data, "reduction.npt=64")]) == 0
    name, args, _ = commands.calls[0]
    assert name == command and args[0].reduction.npt == 64


def test_cli_overrides_may_follow_options(data: Path, commands: types.SimpleNamespace, tmp_path: Path) -> None:
    overrides = base(data)
    assert cli.main(["plan", overrides[0], "--config-dir", str(tmp_path), *overrides[1:]]) == 0
    assert commands.calls[0][1][0].campaign.detector == "pilatus"


def test_cli_bad_config_exits_2_before_running(data: Path, commands: types.SimpleNamespace,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", *base(data, "reduction.npt=0")]) == 2
    assert commands.calls == []
    err = capsys.readouterr().err
    assert err.startswith("xreduce: error: reduction.npt=0 must be a positive integer") and "Traceback" not in err
    assert cli.main(["plan", "--config-dir", "/nonexistent/dir", "campaign=x"]) == 2


def test_cli_verbose_shows_the_traceback(data: Path, commands: types.SimpleNamespace,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-v", "run", *base(data, "reduction.nptt=1")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(commands: types.SimpleNamespace) -> None:
    assert cli.main([]) == 2
    assert cli.main(["plan", "--no-such-option"]) == 2
    assert cli.main(["worker", "--plan", "p.json"]) == 2
    assert cli.main(["frobnicate"]) == 2


def test_cli_exit_codes_of_commands(data: Path, commands: types.SimpleNamespace,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    commands.code = 1
    assert cli.main(["run", *base(data)]) == 1
    commands.code = PlanError("no plan at /x/plan.json")
    assert cli.main(["run", *base(data)]) == 1
    assert "xreduce: error: no plan at /x/plan.json" in capsys.readouterr().err
    commands.code = XReduceError("boom")
    assert cli.main(["merge", *base(data)]) == 1
    commands.code = ConfigError("bad key")
    assert cli.main(["merge", *base(data)]) == 2
    commands.code = KeyboardInterrupt()
    assert cli.main(["run", *base(data)]) == 130


def test_cli_status_of_a_folder(commands: types.SimpleNamespace, tmp_path: Path) -> None:
    assert cli.main(["status", str(tmp_path), "--json"]) == 0
    assert commands.calls[-1] == ("status", (tmp_path,), {"as_json": True})
    assert cli.main(["status", str(tmp_path / "nope")]) == 2


def test_cli_demo_and_worker(commands: types.SimpleNamespace, tmp_path: Path) -> None:
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    assert cli.main(["demo"]) == 0
    assert cli.main(["worker", "--plan", str(tmp_path / "plan.json"), "--group", "3"]) == 0
    assert cli.main(["worker", "--plan", str(tmp_path / "plan.json"), "--merge"]) == 0
    assert commands.calls == [("demo", (tmp_path,), {}), ("demo", (None,), {}),
                              ("worker", (tmp_path / "plan.json", 3), {"merge_only": False, "mpi": False}),
                              ("worker", (tmp_path / "plan.json", None), {"merge_only": True, "mpi": False})]
    assert cli.main(["worker", "--plan", str(tmp_path / "plan.json")]) == 2  # --group or --merge


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert re.fullmatch(r"xreduce \d+\.\d+\S*\n", capsys.readouterr().out)
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "--version"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("xreduce ")
