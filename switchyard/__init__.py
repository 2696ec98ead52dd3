"""Command line, local stack and demo: the layer on top of ingress, router and workers."""

__all__: list[str] = []
