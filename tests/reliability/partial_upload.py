"""A device process that dies by SIGKILL in the middle of uploading its update.

``python tests/reliability/partial_upload.py URL FEDERATION CLIENT_ID MODEL SENT MARKER``:
connects with a Last Will (presence offline) like a real client, says it is online, waits
for a round that selects it, publishes the first ``SENT`` chunks of a valid update cut
into small chunks, writes ``MARKER`` (JSON: transfer id, chunks sent, chunk count), and
kills itself with SIGKILL: no disconnect, no more chunks, the socket closed by the kernel.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from aggregator.modelfile import load_model_file
from edge_client.protocol import Presence, Round, Topics, Update
from edge_client.quantize import quantize_update
from edge_client.transfer import split
from edge_client.transport import BrokerConfig, MqttTransport, Will

CHUNK_BYTES = 240  # small, so the update travels in several chunks


def main(url: str, federation: str, client_id: str, model_path: str, sent: int,
         marker: str) -> None:
    """See the module docstring."""
    topics, model = Topics(federation), load_model_file(Path(model_path))

    def presence(online: bool) -> bytes:
        return Presence(client_id, online, 100, "scripted", "1", "test", time.time()).encode()

    t = MqttTransport(BrokerConfig(url=url, client_id=client_id, durable=False,
                                   will=Will(topics.presence(client_id), presence(False))))
    t.start(wait=10)
    t.subscribe(topics.round())
    t.publish(topics.presence(client_id), presence(True), retain=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = t.get(0.5)
        if message is None or not message.payload:
            continue
        r = Round.decode(message.payload)
        if r.selects(client_id):
            break
    else:
        sys.exit("never selected")
    rng = np.random.default_rng(zlib.crc32(client_id.encode()))
    tensors, _ = quantize_update({s.name: rng.normal(0, 0.05, s.shape) for s in model.spec},
                                 r.codec)
    update = Update(federation=federation, round_id=r.round_id, client_id=client_id,
                    base_version=r.weights_version, model_sha256=r.model_sha256,
                    nonce=os.urandom(16), num_samples=100, metrics={}, codec=r.codec,
                    tensors=tensors, run_id=r.run_id)
    tid = f"u-{r.round_id}-{update.nonce.hex()}-0"
    chunks = split(update.encode(), tid, max_payload=CHUNK_BYTES)
    for chunk in chunks[:sent]:
        t.publish(topics.update(client_id), chunk)  # waits for the broker's PUBACK
    Path(marker).write_text(json.dumps({"transfer_id": tid, "sent": sent,
                                        "count": len(chunks), "round": r.round_id}))
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    url, federation, client_id, model_path, sent, marker = sys.argv[1:]
    main(url, federation, client_id, model_path, int(sent), marker)
