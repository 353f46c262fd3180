"""The control plane's backends for runtimes without image filesystems (see venv_recipe.py
for what each step means there).

    VenvBackend     FERRY_RUNTIME=process: one venv per image on the server's host,
                    `$FERRY_HOME/images/venvs/<key>`, built once and reused; a plain image
                    (no packages, the server's Python) uses the server's interpreter directly
    ClusterBackend  FERRY_RUNTIME=ray: the recipe is checked here (the same refusals, with
                    FERRY_NODE_RUNTIME=process) and each process node builds it into its own
                    cache when a container of it starts there (runtimes/ray/node_images.py);
                    sandbox nodes fetch layers the control plane built (runtimes/ray/node_layers.py)
"""

from __future__ import annotations

import uuid
from typing import Any

from ... import _config
from .layers import LayerStore
from .model import BuiltImage
from .commands import BuildFailed
from .venv_recipe import COMPLETE, SecretEnv, VenvBuilder, check_recipe, plan_venv, recipe_env


class VenvBackend:
    target = "process"

    def __init__(self, store: LayerStore, blobs: Any, step_timeout: float) -> None:
        self.store = store
        self.blobs = blobs
        self.builder = VenvBuilder(blobs.get, step_timeout, store.root / "ferry-package")

    def check(self, wire: dict[str, Any]) -> None:
        check_recipe(wire)

    def build(self, wire: dict[str, Any], force: bool, progress: Any, secret_env: SecretEnv) -> BuiltImage:
        plan = plan_venv(wire)
        steps = plan.steps
        recipe = wire.get("recipe", "")
        if not plan.needs_venv:
            progress.plan(plan.labels, plan.key)
            for index in range(len(steps)):
                progress.step(index, "cached")
            return BuiltImage(key=plan.key, python=plan.python, env=plan.env, workdir=plan.workdir, recipe=recipe,
                              python_version=plan.version)
        venv = self.store.venvs / plan.key
        record = {"label": " -> ".join(plan.labels), "layers": [],
                  "step_labels": plan.labels,  # logs: LayerStore.venv_log
                  "steps": len(steps), "last_step": steps[-1]["label"], "target": self.target}
        if (venv / COMPLETE).exists() and not (force or any(s["force"] for s in steps)):
            progress.plan(plan.labels, plan.key)
            for index in range(len(steps)):
                progress.step(index, "cached")
        else:
            try:
                self.builder.build(plan, venv, lambda index: self.store.venv_log(plan.key, index), progress,
                                   secret_env)
            except BuildFailed as failed:
                self.store.put_record(plan.key, {**record, "state": "failed", "failed_step": failed.plan.index,
                                                 "error": str(failed.failure)})
                raise
        self.store.put_record(plan.key, {**record, "venv": str(venv), "state": "built", "recipe": recipe,
                                         "python_version": plan.version})
        return BuiltImage(key=plan.key, python=str(venv / "bin" / "python"), env=plan.env, workdir=plan.workdir,
                          recipe=recipe, python_version=plan.version, pythonpath=plan.pythonpath(venv))


class ClusterBackend:
    """The ray runtime's images: checked here with the process runtime's rules (add_local_dir/
    add_local_file are bound at their paths on nodes), built by each node. The BuiltImage it
    returns carries the recipe (`node_recipe`) for the node's agent; a forced build gives the
    recipe a new `build_id`, which makes every node build it again once."""

    target = "ray"

    def __init__(self, store: LayerStore) -> None:
        self.store = store

    def check(self, wire: dict[str, Any]) -> None:
        if _config.get("node_runtime") == "process":  # (sandbox nodes run every step: ray/node_layers.py)
            check_recipe(wire, mounts_at_paths=True)

    def build(self, wire: dict[str, Any], force: bool, progress: Any, secret_env: SecretEnv) -> BuiltImage:
        self.check(wire)
        steps = wire["steps"]
        env, workdir = recipe_env(steps)
        forced = force or any(s["force"] for s in steps)
        recipe = {key: wire[key] for key in ("key", "steps", "mounts", "client_python", "recipe") if key in wire}
        recipe["build_id"] = uuid.uuid4().hex if forced else ""
        return BuiltImage(key=wire["key"], python="", env=env, workdir=workdir, recipe=wire.get("recipe", ""),
                          python_version=steps[0]["args"].get("python_version") or wire["client_python"],
                          node_recipe=recipe)
