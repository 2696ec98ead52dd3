"""The local stack: real Apache Kafka (KRaft) and a real OpenBao server, without Docker.

``switchyard stack up`` (:mod:`switchyard.stack.command`) and the test session fixture
both use :class:`LocalStack`.
"""

from ._errors import StackError
from ._local import LocalStack

__all__ = ["LocalStack", "StackError"]
