"""The router: a faust stream that resolves each tenant's action and fans commands out.

``switchyard router`` runs it (``router.command``); ``router.app.create_app`` builds
the faust app. Partition count: the commands topic, every connector topic, the results
topic and the router's table changelogs all have ``SWITCHYARD_TOPIC_PARTITIONS``
partitions (default 6), chosen once per deployment — see ``router.app``.

Only the argument-mapping compiler and the workspace check are exported here, so the
admin API and tools (``switchyard tenants``) can validate workspaces without importing
faust.
"""

from ._mapping import MappingError, compile_mapping
from ._workspace_check import workspace_problem

__all__ = ["MappingError", "compile_mapping", "workspace_problem"]
