"""A lint of containers/xreduce.def: the image cannot be built here (no Apptainer on Debian 12),
so its sections are parsed and checked, the shell ones with ``bash -n``, and its %post install
line is run through containers/install.sh's own option parser."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import tomllib
from container_helpers import CONTAINERS, REPO, parse_definition

REQUIRED = ("arguments", "files", "post", "environment", "runscript", "test", "labels", "help")
SHELL_SECTIONS = ("post", "environment", "runscript", "test")


def _install_line(post: str) -> list[str]:
    """The containers/install.sh command of %post, continuation lines joined."""
    joined = post.replace("\\\n", " ")
    (line,) = [l for l in joined.splitlines() if "containers/install.sh" in l]
    return shlex.split(line)


def _option(words: list[str], name: str) -> str:
    assert name in words, f"%post's install.sh line has no {name}"
    return words[words.index(name) + 1]


def test_header_and_required_sections(definition) -> None:
    header, sections = definition
    assert list(header) == ["Bootstrap", "From"], "Bootstrap must be the first keyword, then From"
    assert header["Bootstrap"] == "docker" and re.fullmatch(r"debian:12(-slim)?", header["From"])
    missing = [name for name in REQUIRED if not sections.get(name, "").strip()]
    assert not missing, f"xreduce.def lacks the sections {missing}"


def test_shell_sections_parse_with_bash(definition, tmp_path) -> None:
    _, sections = definition
    for name in SHELL_SECTIONS:
        script = tmp_path / f"{name}.sh"
        script.write_text(sections[name] + "\n")
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"%{name} is not valid shell: {done.stderr}"


def test_post_installs_with_the_ci_install_script(definition) -> None:
    _, sections = definition
    words = _install_line(sections["post"])
    assert words[0] == "bash" and words[1].endswith("/containers/install.sh")
    assert _option(words, "--system") == "image" and _option(words, "--extras") == "all"
    assert _option(words, "--venv") == "/opt/xreduce"
    assert "--vendor-icds" in words, "the image must carry nvidia.icd so that --nv exposes the host's OpenCL driver"
    # the same options, through the script's own parser, here (--list changes nothing)
    source = _option(words, "--source")
    local = [w.replace(source, str(REPO)) for w in words[2:]]
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), *local, "--list"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "system image: python3 python3-venv openmpi-bin" in done.stdout
    assert f"{REPO}[all] ipykernel" in done.stdout
    assert "icds /etc/OpenCL/vendors: nvidia.icd" in done.stdout


def test_files_copy_everything_the_install_needs(definition) -> None:
    _, sections = definition
    pairs = [line.split() for line in sections["files"].splitlines() if line.strip()]
    sources = {src for src, _ in pairs}
    dests = {dst for _, dst in pairs}
    for src in sources:
        assert (REPO / src).exists(), f"%files copies {src}, which is not in the checkout"
    source_dir = _option(_install_line(sections["post"]), "--source")
    assert dests == {f"{source_dir}/{src}" for src in sources}, "%files must copy into install.sh's --source"
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {p.split(".")[0] for p in setuptools["packages"]} - set(setuptools["package-dir"]) \
        | set(setuptools["package-dir"].values()) | {"pyproject.toml", "README.md"}
    assert needed <= sources, f"pyproject.toml installs {needed - sources}, which %files does not copy"
    assert "containers" in sources, "%post runs containers/install.sh from the copied source"


def test_runscript_test_environment_and_labels(definition) -> None:
    _, sections = definition
    assert sections["runscript"].strip() == 'exec xreduce "$@"'
    assert "xreduce selftest" in sections["test"] and "--require opencl" in sections["test"]
    assert re.search(r"export PATH=/opt/xreduce/bin:\$PATH", sections["environment"]), \
        "the venv's bin (install.sh --venv /opt/xreduce) must come first on PATH"
    assert "OCL_ICD_VENDORS" not in "".join(sections.values()), "OCL_ICD_VENDORS would hide the pip PoCL"
    labels = dict(line.strip().split(None, 1) for line in sections["labels"].splitlines() if line.strip())
    assert labels["org.opencontainers.image.revision"] == "{{ REVISION }}"
    assert re.search(r"^\s*REVISION=\S+", sections["arguments"], re.M), "REVISION needs a default (%arguments)"
    assert re.search(r'echo "org\.opencontainers\.image\.version \$VERSION" >>"\$APPTAINER_LABELS"',
                     sections["post"]), "%post must label the installed version"
    assert "selftest" in sections["help"] and "--nv" in sections["help"] and "module load xreduce" in sections["help"]


def test_the_lint_catches_a_broken_definition(tmp_path) -> None:
    """The parser above is not vacuous: a section typo and bad shell are seen."""
    text = (CONTAINERS / "xreduce.def").read_text()
    header, sections = parse_definition(text.replace("%runscript", "%runscritp"))
    assert "runscript" not in sections and "runscritp" in sections
    broken = tmp_path / "post.sh"
    broken.write_text(sections["post"].replace("set -eu", "if then fi") + "\n")
    assert subprocess.run(["bash", "-n", str(broken)], capture_output=True).returncode != 0


def test_image_packages_are_a_subset_of_what_ci_installs() -> None:
    def listed(level: str) -> set[str]:
        out = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--system", level, "--list"],
                             capture_output=True, text=True, check=True).stdout
        return set(out.splitlines()[0].split(":", 1)[1].split())

    image, test = listed("image"), listed("test")
    assert {"openmpi-bin", "ocl-icd-libopencl1", "hdf5-tools", "python3-venv"} <= image
    assert image <= test, f"CI (make test) must install every image package; missing: {image - test}"
    assert {"lmod", "slurmctld", "pocl-opencl-icd"} <= test - image


def test_install_script_rejects_bad_options() -> None:
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--system", "everything"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--system everything: unknown level" in done.stderr
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --frobnicate" in done.stderr
    helped = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--system LEVEL" in helped.stdout and "Never set OCL_ICD_VENDORS" in helped.stdout


def test_install_script_never_deletes_the_source(tmp_path) -> None:
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--system", "none", "--venv", str(REPO.parent),
                           "--source", str(REPO)], capture_output=True, text=True)
    assert done.returncode == 2 and "would delete it" in done.stderr
    assert (REPO / "pyproject.toml").exists()


def test_vendor_icds_are_written(tmp_path) -> None:
    env = {"XREDUCE_ICD_DIR": str(tmp_path / "vendors"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--system", "none", "--vendor-icds"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "vendors" / "nvidia.icd").read_text() == "libnvidia-opencl.so.1\n"
    assert (tmp_path / "vendors" / "amdocl64.icd").read_text() == "libamdocl64.so\n"


def test_ci_uses_the_install_script() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "INSTALL := bash containers/install.sh" in makefile
    assert "$(INSTALL) --system test" in makefile
    assert "$(INSTALL) --system none --venv $(VENV)" in makefile
    shim = (REPO / "tests" / "services" / "install-system-packages.sh").read_text()
    assert 'containers/install.sh" --system "$LEVEL"' in shim
    assert Path(REPO / ".ci" / "run").read_text().count("make test") >= 1
