"""Image layers for sandbox nodes (runtimes/ray/node_layers.py): packed on the control plane,
sent in parts, checked and unpacked on the node with owners, whiteouts and extended
attributes as built; a second image sharing a layer sends nothing more."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ferry.exception import ExecutionError, InvalidError
from ferry.server.runtimes.ray import node_layers
from ferry.server.runtimes.ray.node_layers import LayerTars, NodeLayers, SandboxImages, rootfs_step, sandbox_images

SHIFTED = 1_000_000_000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep their owners and device nodes: root only")


def _layer(root: Path) -> Path:
    """An overlay upper directory as a build step leaves it: shifted owners, a whiteout (a 0/0
    character device), an opaque directory, a file capability, a hard link and a symlink."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "step.txt").write_text("from a step")
    os.link(root / "etc" / "step.txt", root / "etc" / "linked.txt")
    os.symlink("step.txt", root / "etc" / "alias")
    os.mknod(root / "etc" / "removed", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (root / "opaque").mkdir()
    os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    (root / "bin").mkdir()
    (root / "bin" / "ping").write_bytes(b"\x7fELF")
    os.chmod(root / "bin" / "ping", 0o4755)
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            os.lchown(os.path.join(directory, name), SHIFTED, SHIFTED + 5)
    os.lchown(root, SHIFTED, SHIFTED)
    os.chmod(root / "bin" / "ping", 0o4755)  # (chown cleared the set-uid bit)
    return root


def _sender(tars: LayerTars) -> SandboxImages:
    return SandboxImages(None, tars)  # (no builder: the layers are packed by the test)


def _send(images: SandboxImages, agent: "_Agent", manifest: dict[str, Any]) -> int:
    return asyncio.run(images._send_layers(agent, manifest, agent.nodes.missing(manifest), "c1"))


def test_a_layer_arrives_as_built_and_is_sent_once(tmp_path, monkeypatch):
    monkeypatch.setattr(node_layers, "PART_BYTES", 1000)  # in several parts
    tars = LayerTars(tmp_path / "tars")
    packed = tars.pack(_layer(tmp_path / "layer"))
    assert tars.pack(tmp_path / "layer") == packed  # packed once
    manifest = {"layers": [packed], "mounts": []}
    agent = _Agent(tmp_path / "node")
    nodes = agent.nodes
    assert packed["size"] > 3000 and _send(_sender(tars), agent, manifest) == packed["size"]
    [unpacked] = nodes.paths(manifest)
    info = os.lstat(unpacked / "etc" / "step.txt")
    assert (info.st_uid, info.st_gid) == (SHIFTED, SHIFTED + 5) and os.lstat(unpacked).st_uid == SHIFTED
    assert os.lstat(unpacked / "etc" / "linked.txt").st_ino == info.st_ino
    assert os.readlink(unpacked / "etc" / "alias") == "step.txt"
    removed = os.lstat(unpacked / "etc" / "removed")
    assert stat.S_ISCHR(removed.st_mode) and removed.st_rdev == os.makedev(0, 0)
    assert os.getxattr(unpacked / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.lstat(unpacked / "bin" / "ping").st_mode & stat.S_ISUID
    assert (tmp_path / "node" / "layers" / f"{packed['digest']}.fetches").read_text().count("\n") == 1
    assert _send(_sender(tars), agent, manifest) == 0 and nodes.missing(manifest) == []


def test_a_tar_that_does_not_match_its_digest_is_refused(tmp_path):
    tars = LayerTars(tmp_path / "tars")
    packed = tars.pack(_layer(tmp_path / "layer"))
    nodes = NodeLayers(tmp_path / "node")
    data = tars.read(packed["digest"], 0, packed["size"])
    with pytest.raises(InvalidError, match="does not match its digest"):
        nodes.put("c1", packed["digest"], 0, data[:-1] + b"x", True)
    assert nodes.missing({"layers": [packed]}) == [packed["digest"]]
    assert not list((tmp_path / "node" / "layers" / ".incoming").glob("*.part"))
    with pytest.raises(InvalidError, match="sha256"):
        nodes.put("c1", "../../etc", 0, b"", True)
    with pytest.raises(InvalidError, match="transfer"):
        nodes.put("../x", packed["digest"], 0, b"", True)


def test_steps_that_need_a_root_filesystem_are_named():
    steps = [{"kind": "debian_slim", "label": "debian_slim()", "args": {}},
             {"kind": "pip_install", "label": "pip_install(six)", "args": {}}]
    assert rootfs_step({"steps": steps}) is None
    steps.append({"kind": "run_commands", "label": "run_commands(make)", "args": {}})
    assert rootfs_step({"steps": steps}) == "run_commands(make)"
    copy = {"kind": "copy", "label": "add_local_dir(x, /app, copy=True)", "args": {"kind": "dir"}}
    assert rootfs_step({"steps": [steps[0], copy]}) == copy["label"]


class _Agent:
    """A node's agent, in process: the calls the control plane makes (node_layers.SandboxImages)."""

    def __init__(self, root: Path, runtime: str = "sandbox") -> None:
        self.nodes = NodeLayers(root)
        self.runtime = runtime
        self.blobs: dict[str, bytes] = {}

    def __getattr__(self, name: str) -> Any:
        calls = {"node_runtime": lambda setting, gpu: {"runtime": self.runtime, "why": "no bubblewrap",
                                                        "node_id": "ab" * 20},
                 "missing_layers": self.nodes.missing_files, "put_layer": self.nodes.put,
                 "put_blobs": self.blobs.update}

        class Method:
            @staticmethod
            async def remote(*args: Any) -> Any:
                await asyncio.sleep(0)  # (a call to an actor lets other tasks run)
                return calls[name](*args)

        return Method()


def test_a_process_node_refuses_an_image_that_needs_a_root_filesystem_naming_it(tmp_path):
    images = _sender(LayerTars(tmp_path / "tars"))  # (a process node gets no layers)
    recipe = {"key": "k", "steps": [{"kind": "debian_slim", "label": "debian_slim()", "args": {}},
                                    {"kind": "run_commands", "label": "run_commands(make)", "args": {}}]}
    launch = {"node_runtime": "auto", "image": recipe, "container_id": "c1"}
    with pytest.raises(InvalidError, match=r"Node abababab cannot run this image: its step run_commands\(make\).*"
                                           r"no bubblewrap.*Install bubblewrap and passt"):
        asyncio.run(images.prepare(_Agent(tmp_path, "process"), launch, None))
    plain = {**launch, "image": {**recipe, "steps": recipe["steps"][:1]}}
    placement = asyncio.run(images.prepare(_Agent(tmp_path, "process"), plain, None))
    assert placement.launch is plain and "as a process: no bubblewrap" in (placement.note or "")


def _sender_of_one_layer(tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """A manifest of one packed layer, and a sender whose image build answers it."""
    tars = LayerTars(tmp_path / "tars")
    manifest = {"key": "img", "python": "python3", "env": {}, "workdir": None,
                "layers": [tars.pack(_layer(tmp_path / "layer"))], "mounts": []}
    images = _sender(tars)

    async def built(recipe: dict[str, Any], emit: Any = None) -> dict[str, Any]:
        return manifest

    images.manifest = built  # type: ignore[method-assign]
    return manifest, images


def test_a_sandbox_node_gets_the_layers_it_lacks_and_the_manifest(tmp_path):
    manifest, images = _sender_of_one_layer(tmp_path)
    agent = _Agent(tmp_path / "node")
    launch = {"node_runtime": "sandbox", "image": {"key": "k", "steps": []}, "container_id": "c1"}
    placement = asyncio.run(images.prepare(agent, launch, None))
    assert placement.launch["sandbox"] is manifest and placement.launch["image"] is None
    assert placement.sent == manifest["layers"][0]["size"] and "in a sandbox" in (placement.note or "")
    assert asyncio.run(images.prepare(agent, launch, None)).sent == 0


def test_containers_starting_together_on_a_node_send_a_layer_once(tmp_path):
    manifest, images = _sender_of_one_layer(tmp_path)
    agent = _Agent(tmp_path / "node")

    async def both() -> list[int]:
        launches = [{"node_runtime": "auto", "image": {"key": "k", "steps": []}, "container_id": f"c{i}"}
                    for i in range(2)]
        placements = await asyncio.gather(*(images.prepare(agent, launch, None) for launch in launches))
        return sorted(p.sent for p in placements)

    assert asyncio.run(both()) == [0, manifest["layers"][0]["size"]]


def test_a_control_plane_that_cannot_build_sandbox_images_keeps_nodes_on_processes(tmp_path, monkeypatch):
    from ferry.server.images.layers import LayerStore
    from ferry.server.runtimes.sandbox import bwrap

    store = LayerStore(tmp_path / "images")
    monkeypatch.setenv("FERRY_BASE_ROOTFS_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("FERRY_NODE_RUNTIME", "auto")
    assert isinstance(sandbox_images(store, None, None), SandboxImages)  # (root, bubblewrap here)

    def unsupported() -> None:
        raise ExecutionError("The sandbox runtime needs root")

    monkeypatch.setattr(bwrap, "check_sandbox_support", unsupported)
    assert sandbox_images(store, None, None) is None
    assert os.environ["FERRY_NODE_RUNTIME"] == "process"
    monkeypatch.setenv("FERRY_NODE_RUNTIME", "sandbox")
    with pytest.raises(InvalidError, match="FERRY_NODE_RUNTIME=sandbox: the control plane .* cannot here: The sandbox"):
        sandbox_images(store, None, None)
