# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Test-only callback: SIGKILL the whole ansible-playbook process group at the Nth task start.

REL_KILL_AT=N (1-based, counted over every task start, dynamic includes too) and REL_KILL_DELAY=seconds
(0: at the task boundary; more: while the task's modules run on the hosts). Used by killpoints.sh.
"""

import os
import signal
import threading

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: rel_killer
type: aggregate
short_description: kill the playbook at the Nth task (reliability tests only)
description: SIGKILL the process group at the task number given by REL_KILL_AT, after REL_KILL_DELAY seconds.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "rel_killer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.count = 0
        self.kill_at = int(os.environ.get("REL_KILL_AT", "0"))
        self.delay = float(os.environ.get("REL_KILL_DELAY", "0"))

    def _kill(self):
        os.killpg(os.getpgrp(), signal.SIGKILL)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.count += 1
        if self.count == self.kill_at:
            with open(os.environ.get("REL_KILL_LOG", os.devnull), "a") as handle:
                handle.write("%d\t%s\n" % (self.count, task.get_name()))
            if self.delay > 0:
                threading.Timer(self.delay, self._kill).start()
            else:
                self._kill()

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start
