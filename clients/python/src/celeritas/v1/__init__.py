"""Generated gRPC and protobuf code for the celeritas.v1 contract (``proto/celeritas/v1``).

Do not edit: ``clients/python/scripts/generate`` writes every file in this package. The public
client API (``celeritas.Client``) converts these messages to plain dataclasses at its edge; use
the stubs here directly only for what the client does not cover.
"""
