"""A worker process of the test worlds: joins RPC, serves calls until rank 0 shuts down.

Run with the torchrun-style environment of :func:`helpers.world_env`; ``DIFOPT_RPC_TIMEOUT``
sets its RPC timeout. It exits by itself if its parent process goes away.
"""

import os
import threading
import time

import torch

torch.set_num_threads(1)

import difopt_distributed as dd  # noqa: E402


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def main() -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    dd.auto_init_rpc()(lambda: None)()
    print(f"rank {dd.get_world_rank()} exited cleanly", flush=True)


if __name__ == "__main__":
    main()
