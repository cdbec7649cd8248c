# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark-only callback: wall time of every task of a playbook run, written as JSON.

Enabled by bench/run.sh (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED=bench_profile) and writes to
$KUBESPAN_BENCH_PROFILE: tasks in order (name, role, seconds from its start to the next task's start, host
results ok/changed/skipped), the run's total and the recap per host.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_profile
type: aggregate
short_description: per-task wall time as JSON (kubespan.mesh benchmarks)
description: Writes the duration of each task and the recap to the file named by KUBESPAN_BENCH_PROFILE.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.time()
        self.tasks = []
        self.current = None

    def _close(self):
        if self.current is not None:
            self.current["seconds"] = round(time.time() - self.current.pop("start"), 3)
            self.tasks.append(self.current)
            self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        role = task._role.get_name() if getattr(task, "_role", None) else ""
        self.current = {"name": task.get_name(), "role": role, "start": time.time(), "ok": 0, "changed": 0, "skipped": 0}

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _count(self, key, result=None):
        if self.current is not None:
            self.current[key] += 1
            # is_changed() reads the raw result; result.result / ._result would convert the whole result to native
            # types on every call (ansible-core 2.19), a cost of this benchmark, not of the role, on the mesh results
            if result is not None and result.is_changed():
                self.current["changed"] += 1

    def v2_runner_on_ok(self, result):
        self._count("ok", result)

    def v2_runner_on_skipped(self, result):
        self._count("skipped")

    def v2_playbook_on_stats(self, stats):
        self._close()
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        path = os.environ.get("KUBESPAN_BENCH_PROFILE")
        if path:
            with open(path, "w") as f:
                json.dump({"total_seconds": round(time.time() - self.started, 3), "tasks": self.tasks, "recap": hosts}, f, indent=1)
