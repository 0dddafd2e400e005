"""The kernel manager of autograding: jupyter_client's own, whose kernels start through the
sandbox's provisioner (``course_utils.autograde.kernels.provisioner``), and what that provisioner
reads of one kernel: the zygote to fork it from, and its notebook folder's files."""

from __future__ import annotations

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from course_utils.autograde.kernels.forked import Zygote
from course_utils.autograde.kernels.provisioner import PROVISIONER_NAME, SandboxProvisioner


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel spec names the sandbox's provisioner."""

    # The zygote to fork the kernel from; None: the kernel starts alone in its sandbox.
    zygote: Zygote | None = None
    # The notebook folder's files (name -> where they are now) for a kernel started before
    # nbgrader fills the folder; None: the folder's own files at start.
    folder_files: dict[str, str] | None = None

    @property
    def kernel_spec(self) -> KernelSpec | None:
        spec = super().kernel_spec
        if spec is not None:
            spec.metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME,
                                                   "config": {}}
        return spec

    @property
    def forked(self) -> bool:
        """Whether the kernel was forked from the zygote (else started alone)."""
        return isinstance(self.provisioner, SandboxProvisioner) and self.provisioner.forked
