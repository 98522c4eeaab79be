"""gRPC transport for deployments: server-side transport, client `connect`, TLS."""

from federa.transport.grpc.client import connect
from federa.transport.grpc.server import GrpcServer, GrpcTransport

__all__ = ["GrpcServer", "GrpcTransport", "connect"]
