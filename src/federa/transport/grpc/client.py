"""The client side of a deployment: dial the server, run the tasks it sends, reconnect."""

from __future__ import annotations

import logging
import queue
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc

from federa.client.base import Client
from federa.client.runner import run_task
from federa.errors import TransportError
from federa.transport.grpc import codec
from federa.transport.grpc.pool import keep_freed_heap

logger = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
# The server refused this client for a reason that retrying will not fix.
FATAL_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INVALID_ARGUMENT,
}


def _session(
    client: Client,
    channel: grpc.Channel,
    client_id: int | None,
    name: str,
    metadata: list[tuple[str, str]],
    on_connect: list[bool],
) -> str:
    """Run one stream until the server ends the run; return its reason."""
    outbox: queue.Queue[Iterator[Any] | None] = queue.Queue()

    def requests() -> Iterator[Any]:
        yield codec.encode_hello(client_id, name)
        while (item := outbox.get()) is not None:
            yield from item

    join = channel.stream_stream(
        codec.JOIN_METHOD,
        request_serializer=codec.serialize,
        response_deserializer=codec.parse_server_message,
    )
    responses = join(requests(), metadata=metadata)
    decoder: codec.TaskDecoder | None = None
    try:
        for message in responses:
            kind = codec.message_kind(message)
            if decoder is None:
                welcome = codec.decode_welcome(message)
                decoder = codec.TaskDecoder(welcome.client_id)
                on_connect[0] = True
                logger.info("joined run %s as client %d", welcome.run_id[:8], welcome.client_id)
            elif kind == "shutdown":
                return codec.decode_shutdown(message)
            elif (done := decoder.feed(message)) is not None:
                task_id, task = done
                outcome = run_task(client, task)
                outbox.put(codec.encode_result(task_id, outcome))
                # The stream holds what it still has to send; drop this frame's copies
                # so a large model is not kept alive until the next task.
                del done, task, outcome
    finally:
        outbox.put(None)
        responses.cancel()
    raise TransportError("the server closed the stream without ending the run")


def connect(
    client: Client,
    address: str,
    *,
    client_id: int | None = None,
    name: str = "",
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    reconnect_timeout: float = 60.0,
) -> str:
    """Serve `client` to the federa server at `address` until the run ends.

    The client dials out (it never accepts connections), keeps one stream open, and
    runs each task the server sends. If the server goes away (a restart after a
    crash) it reconnects with exponential backoff for up to `reconnect_timeout`
    seconds since it last lost contact.

    Args:
        client: The client to serve.
        address: "host:port" of the server.
        client_id: The id to join as (its data partition); None lets the server choose.
        name: A label for the server's logs.
        token: This client's authentication token, when the server requires one.
        credentials: TLS channel credentials (see tls.channel_credentials), or None for
            plaintext.
        reconnect_timeout: Give up after this many seconds without a connection.

    Returns:
        The reason the server gave for ending the run.

    Raises:
        TransportError: the server refused this client, or could not be reached.
    """
    metadata = [("authorization", f"Bearer {token}")] if token else []
    keep_freed_heap()
    delay, lost_at = 0.5, time.monotonic()
    while True:
        channel = (
            grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        )
        connected = [False]
        try:
            reason = _session(client, channel, client_id, name, metadata, connected)
            logger.info("the server ended the run: %s", reason)
            return reason
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code in FATAL_CODES:
                raise TransportError(f"the server refused this client: {details}") from None
            problem = f"{code.name}: {details}"
        except (TransportError, codec.CodecError) as exc:
            problem = str(exc)
        finally:
            channel.close()
        if connected[0]:
            delay, lost_at = 0.5, time.monotonic()
        waited = time.monotonic() - lost_at
        if waited > reconnect_timeout:
            raise TransportError(
                f"cannot reach the server at {address} for {waited:.0f}s ({problem}); "
                "check the address and that the server is running"
            )
        logger.warning("lost the server (%s); retrying in %.1fs", problem, delay)
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 10.0)
