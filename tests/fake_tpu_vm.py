"""A Cloud TPU VM worker simulated on 127.0.0.1, for JAX's own cluster detection on the CPU backend.

On a TPU VM slice JAX finds its workers through the GCE metadata server of each VM
(``jax._src.clusters.cloud_tpu_cluster.GceTpuCluster``): ``agent-worker-number`` says which worker
this is, ``worker-network-endpoints`` lists every worker (the first is the coordinator, port
``JAX_COORDINATOR_PORT`` or 8482) and ``tpu-env`` may carry multislice settings.
:class:`MetadataServer` answers those questions for one worker. ``GCE_METADATA_IP`` points JAX at it.

JAX asks the metadata server only on a machine it takes for a TPU VM: ``JAX_FORCE_TPU_INIT``
makes it one, but on a machine without TPU chips ``import jax`` also sets ``TPU_SKIP_MDS_QUERY``,
which switches the metadata query off again. ``python tests/fake_tpu_vm.py SCRIPT ARGS...`` runs
SCRIPT as ``__main__`` after importing jax and removing that variable, as on a real TPU VM.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUNNER = os.path.abspath(__file__)
_PREFIX = "/computeMetadata/v1/instance/attributes/"


class MetadataServer:
    """One TPU VM's metadata server: worker ``worker`` of ``workers`` (addresses), on a free port.

    ``asked`` lists the attribute names requested, in order.
    """

    def __init__(self, worker: int, workers: list[str]):
        self.attributes = {
            "agent-worker-number": str(worker),
            "worker-network-endpoints": ",".join(workers),
            "tpu-env": f"ACCELERATOR_TYPE: 'v4-{8 * len(workers)}'\nWORKER_ID: '{worker}'\n",
        }
        self.asked: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                key = self.path[len(_PREFIX):] if self.path.startswith(_PREFIX) else None
                server.asked.append(key)
                value = server.attributes.get(key)
                if self.headers.get("Metadata-Flavor") != "Google" or value is None:
                    self.send_response(403 if value is not None else 404)
                    self.end_headers()
                    return
                body = value.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """The value of ``GCE_METADATA_IP`` that sends JAX's queries here."""
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def env(self, coordinator_port: int) -> dict[str, str]:
        """Environment of a process on this worker (run through :data:`RUNNER`)."""
        return {"JAX_FORCE_TPU_INIT": "1", "GCE_METADATA_IP": self.address,
                "JAX_COORDINATOR_PORT": str(coordinator_port)}

    def __enter__(self) -> MetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _run_as_tpu_vm_worker(argv: list[str]) -> None:
    import jax  # noqa: F401  (cloud TPU set-up runs at import)

    os.environ.pop("TPU_SKIP_MDS_QUERY", None)
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    _run_as_tpu_vm_worker(sys.argv[1:])
