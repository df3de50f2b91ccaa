"""containers/publish-cvmfs.sh into a temporary --repo-dir (real files, links and modes), and into a
"CVMFS repository" whose ``cvmfs_server`` is a stand-in recording the transaction (the real one
needs a stratum-0 server)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from container_helpers import CONTAINERS, clean_env, publish


def _tree(root: Path) -> dict[str, str]:
    """relative path → 'dir', 'file 0644', or '-> target' (links)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = f"file {stat.S_IMODE(path.stat().st_mode):04o}"
    return out


def test_layout_latest_link_and_module(tmp_path, fake_image) -> None:
    repo = tmp_path / "sw"
    done = publish(repo, "0.1.0", fake_image)
    assert "published xreduce 0.1.0" in done.stdout
    assert _tree(repo) == {
        "modulefiles": "dir", "modulefiles/xreduce": "dir",
        "modulefiles/xreduce/0.1.0": "file 0644", "modulefiles/xreduce/default": "-> 0.1.0",
        "xreduce": "dir", "xreduce/0.1.0": "dir", "xreduce/0.1.0/bin": "dir",
        "xreduce/0.1.0/bin/xreduce": "file 0755", "xreduce/0.1.0/xreduce.sif": "file 0644",
        "xreduce/latest": "-> 0.1.0"}
    assert (repo / "xreduce/0.1.0/xreduce.sif").read_bytes() == fake_image.read_bytes()
    assert (repo / "xreduce/0.1.0/bin/xreduce").read_text() == (CONTAINERS / "xreduce-wrapper.sh").read_text()
    module = (repo / "modulefiles/xreduce/0.1.0").read_text()
    assert module.startswith("#%Module")
    assert f"setenv XREDUCE_IMAGE {repo}/xreduce/0.1.0/xreduce.sif\n" in module
    assert f"set root {repo}/xreduce/0.1.0\n" in module and "prepend-path PATH $root/bin" in module
    assert not re.search(r"@[A-Z]+@", module), "every placeholder is filled"

    publish(repo, "0.2.0", fake_image)
    assert os.readlink(repo / "xreduce/latest") == "0.2.0"
    assert os.readlink(repo / "modulefiles/xreduce/default") == "0.2.0"
    publish(repo, "0.1.1", fake_image, "--no-latest")  # a backport leaves latest alone
    assert os.readlink(repo / "xreduce/latest") == "0.2.0"
    assert sorted(p.name for p in (repo / "xreduce").iterdir()) == ["0.1.0", "0.1.1", "0.2.0", "latest"]


def test_an_existing_version_is_never_overwritten(tmp_path, fake_image) -> None:
    repo = tmp_path / "sw"
    publish(repo, "0.1.0", fake_image)
    before = _tree(repo)
    other = tmp_path / "other.sif"
    other.write_bytes(b"another image")
    done = publish(repo, "0.1.0", other, check=False)
    assert done.returncode == 1
    assert f"{repo}/xreduce/0.1.0 already exists: a published version is never overwritten" in done.stderr
    assert _tree(repo) == before and (repo / "xreduce/0.1.0/xreduce.sif").read_bytes() == fake_image.read_bytes()
    # the module alone (an image removed by hand) blocks as well
    (repo / "xreduce/0.1.0/xreduce.sif").unlink()
    (repo / "xreduce/0.1.0/bin/xreduce").unlink()
    (repo / "xreduce/0.1.0/bin").rmdir()
    (repo / "xreduce/0.1.0").rmdir()
    done = publish(repo, "0.1.0", other, check=False)
    assert done.returncode == 1 and "modulefiles/xreduce/0.1.0 already exists" in done.stderr


def test_usage_errors(tmp_path, fake_image) -> None:
    repo = tmp_path / "sw"
    for version, code, message in (("", 2, "give the VERSION"), ("latest", 2, "must be a plain version"),
                                   ("../x", 2, "must be a plain version")):
        done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--image", str(fake_image),
                               "--repo-dir", str(repo), *([version] if version else [])],
                              capture_output=True, text=True)
        assert done.returncode == code and message in done.stderr, done.stderr
    done = publish(repo, "0.1.0", tmp_path / "missing.sif", check=False)
    assert done.returncode == 1 and "--image" in done.stderr and "apptainer build xreduce.sif" in done.stderr
    done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--image", str(fake_image), "0.1.0"],
                          capture_output=True, text=True, env=clean_env())
    assert done.returncode == 2 and "give --repo NAME" in done.stderr
    assert not repo.exists() or not any(repo.rglob("*.sif")), "nothing written on a usage error"
    helped = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--repo-dir DIR" in helped.stdout and "never overwritten" in helped.stdout


def test_sandbox_from_a_folder_and_by_unpacking(tmp_path, fake_image, apptainer_stub) -> None:
    repo = tmp_path / "sw"
    sandbox = tmp_path / "unpacked"
    (sandbox / "opt/xreduce/bin").mkdir(parents=True)
    (sandbox / "opt/xreduce/bin/xreduce").write_text("#!/bin/sh\n")
    publish(repo, "0.1.0", fake_image, "--sandbox-from", str(sandbox), "--prefix", "/cvmfs/sw.example.org")
    assert (repo / "xreduce/0.1.0/sandbox/opt/xreduce/bin/xreduce").read_text() == "#!/bin/sh\n"
    module = (repo / "modulefiles/xreduce/0.1.0").read_text()
    assert "setenv XREDUCE_IMAGE /cvmfs/sw.example.org/xreduce/0.1.0/sandbox\n" in module, \
        "with a sandbox the module runs it, named by the path users see (--prefix)"
    assert not (repo / "xreduce/0.1.0/.cvmfscatalog").exists(), "nested catalogs only on CVMFS"

    env = clean_env(PATH=f"{apptainer_stub.bin}:{os.environ['PATH']}")
    publish(repo, "0.2.0", fake_image, "--sandbox", env=env)
    dest = repo / "xreduce/0.2.0"
    assert apptainer_stub.calls() == [["build", "--sandbox", *[str(p) for p in _staged(apptainer_stub)]]]
    assert (dest / "sandbox/.singularity.d/from.sif").read_bytes() == fake_image.read_bytes()
    assert f"setenv XREDUCE_IMAGE {repo}/xreduce/0.2.0/sandbox" in (repo / "modulefiles/xreduce/0.2.0").read_text()
    assert not list((repo / "xreduce").glob(".*staging*")), "the staging folder was renamed into place"


def _staged(stub) -> list[Path]:
    """The (sandbox, image) paths of the stub's build call: inside the staging folder, since renamed."""
    _, _, sandbox, image = stub.calls()[0]
    assert Path(sandbox).parent.name.startswith(".0.2.0.staging.") and Path(image).name == "xreduce.sif"
    return [Path(sandbox), Path(image)]


def _cvmfs(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """A stand-in cvmfs_server (records its argv) and a mount folder for CVMFS_MOUNT."""
    bin_dir, mount, log = tmp_path / "cvmfs-bin", tmp_path / "cvmfs", tmp_path / "cvmfs_server.log"
    bin_dir.mkdir()
    (mount / "sw.example.org").mkdir(parents=True)
    server = bin_dir / "cvmfs_server"
    server.write_text(f'#!/bin/bash\necho "$*" >>{log}\n')
    server.chmod(0o755)
    return clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", CVMFS_MOUNT=str(mount)), mount, log


def test_cvmfs_transaction_and_publish(tmp_path, fake_image) -> None:
    env, mount, log = _cvmfs(tmp_path)
    sandbox = tmp_path / "unpacked"
    (sandbox / "etc").mkdir(parents=True)
    done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--repo", "sw.example.org", "--image",
                           str(fake_image), "--sandbox-from", str(sandbox), "0.1.0"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["transaction sw.example.org", "publish sw.example.org"]
    root = mount / "sw.example.org"
    assert (root / "xreduce/0.1.0/.cvmfscatalog").exists(), "the sandbox gets its own nested catalog"
    assert "setenv XREDUCE_IMAGE /cvmfs/sw.example.org/xreduce/0.1.0/sandbox" in \
        (root / "modulefiles/xreduce/0.1.0").read_text()
    # CVMFS_REPO names the repository as well; an existing version stops before any transaction
    env["CVMFS_REPO"] = "sw.example.org"
    done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--image", str(fake_image), "0.1.0"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "never overwritten" in done.stderr
    assert log.read_text().splitlines() == ["transaction sw.example.org", "publish sw.example.org"]


def test_cvmfs_failure_aborts_the_transaction(tmp_path, fake_image, apptainer_stub) -> None:
    env, mount, log = _cvmfs(tmp_path)
    env.update(PATH=f"{apptainer_stub.bin}:{env['PATH']}", STUB_FAIL_BUILD="1")
    done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--repo", "sw.example.org", "--image",
                           str(fake_image), "--sandbox", "0.1.0"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "aborting the transaction" in done.stderr
    assert log.read_text().splitlines() == ["transaction sw.example.org", "abort -f sw.example.org"]
    root = mount / "sw.example.org"
    assert not (root / "xreduce/0.1.0").exists() and not list((root / "xreduce").glob(".*staging*"))
    assert not (root / "modulefiles/xreduce/0.1.0").exists()
