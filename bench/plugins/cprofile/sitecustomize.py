# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark-only: cProfile every Ansible worker process (one task on one host) into $KUBESPAN_BENCH_CPROFILE_DIR.

bench/controller.py --cprofile puts this directory first on PYTHONPATH of ansible-playbook; Python imports
sitecustomize at start-up, and this wraps WorkerProcess._run (which runs in the forked worker) so that each
worker writes worker-<pid>.pstats before it exits. The main process is profiled by `python -m cProfile` itself.
"""

import os

_DIR = os.environ.get("KUBESPAN_BENCH_CPROFILE_DIR")


def _patch():
    from ansible.executor.process import worker

    original = worker.WorkerProcess._run

    def _run(self):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            return original(self)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(_DIR, "worker-%d.pstats" % os.getpid()))

    worker.WorkerProcess._run = _run


if _DIR:
    _patch()
