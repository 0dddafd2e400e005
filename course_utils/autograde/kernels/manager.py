"""The kernel manager of autograding: starts each kernel in its sandbox, or forks it from a
zygote, and talks to it over IPC (a kernel without network cannot use TCP)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from course_utils.autograde.kernels.forked import Zygote, ZygoteError
from course_utils.autograde.kernels.policy import (GUARDED_KERNEL, UNPRIVILEGED_ID, Sandbox,
                                                   bwrap_command, kernel_user_id,
                                                   notebook_folder_files)


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel in the sandbox and talks to it over IPC."""

    # The zygote to fork the kernel from; None: the kernel starts alone in its sandbox.
    zygote: Zygote | None = None
    _private: str | None = None
    # The notebook folder's files (name -> where they are now) for a kernel started before
    # nbgrader fills the folder; None: the folder's own files at start.
    folder_files: dict[str, str] | None = None

    _kernel_cmd: list[str] = []
    _folder = ""
    _user = UNPRIVILEGED_ID

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        self._private = tempfile.mkdtemp(prefix="course-sandbox-",
                                         dir=self.zygote.root if self.zygote else None)
        # A kernel the zygote may fork runs as the zygote's user.
        self._user = UNPRIVILEGED_ID if self.zygote else kernel_user_id()
        if os.geteuid() == 0:
            os.chown(self._private, self._user, self._user)
        self.transport = "ipc"
        self.ip = os.path.join(self._private, "kernel")
        self.connection_file = os.path.join(self._private, "connection.json")
        # Signals from outside do not reach a kernel in its own session and PID namespace:
        # interrupts go over the control channel instead.
        if self.kernel_spec is not None:
            self.kernel_spec.interrupt_mode = "message"
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        # The guard goes in before any of the notebook's code runs.
        kernel_cmd = [GUARDED_KERNEL if arg == "ipykernel_launcher" else arg
                      for arg in kernel_cmd]
        os.chmod(self.connection_file, 0o644)
        folder = os.path.abspath(kw.get("cwd") or os.getcwd())
        # The sandbox enters the folder itself; outside, it may not exist yet.
        kw["cwd"] = folder if self.folder_files is None else self._private
        settings = Sandbox(config=self.config)
        self._kernel_cmd, self._folder = kernel_cmd, folder
        return bwrap_command(kernel_cmd, folder, self._private, settings,
                             self.folder_files, self._user), kw

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Forks the kernel from ``zygote`` where it serves it
        (``course_utils.autograde.kernels.forked``), else starts it alone in its sandbox."""
        zygote = self.zygote
        files = (notebook_folder_files(self._folder) if self.folder_files is None
                 else self.folder_files)
        if (zygote is None or not zygote.serves(self._kernel_cmd, self._folder)
                or not all(os.path.isfile(path) for path in files.values())):
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        try:
            process = zygote.start_kernel(self._private, self._kernel_cmd, self._folder, files)
        except (ZygoteError, OSError) as error:
            self.log.warning("Starting the kernel alone: the zygote could not fork it (%s)", error)
            shutil.rmtree(os.path.join(self._private, "files"), ignore_errors=True)
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        assert self.provisioner is not None
        provisioner: Any = self.provisioner
        provisioner.process, provisioner.pid, provisioner.pgid = process, None, None
        provisioner.cwd = self._folder
        self._reconcile_connection_info(provisioner.connection_info)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._private and not restart:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
