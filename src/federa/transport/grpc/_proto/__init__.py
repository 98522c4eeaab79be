"""Generated protobuf code (make proto); only transport/grpc/codec.py imports it."""
