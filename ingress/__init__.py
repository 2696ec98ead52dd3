"""ingress."""

__all__: list[str] = []
