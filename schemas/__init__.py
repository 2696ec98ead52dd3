"""Wire models: everything that crosses Kafka or the public API. Imports nothing else of ours."""

from ._base import WireModel, dumps, loads
from ._limits import json_depth_exceeds, lost_integer_digits, nested_too_deep
from .command import (
    COMMAND_SCHEMA_VERSION,
    Command,
    CommandSource,
    ConnectorOptions,
    RoutedCommand,
    TaskCancel,
    command_id_for,
)
from .config import (
    ActionConfig,
    ApiKeyRecord,
    ConfigRecord,
    Limits,
    RolePolicy,
    WorkspaceConfig,
    api_key_key,
    workspace_key,
)
from .errors import ErrorCode, ErrorInfo
from .result import (
    FINAL_STATUSES,
    RESULT_SCHEMA_VERSION,
    Result,
    ResultStatus,
    StageTimes,
    fields_from_command,
)
from .topics import CONNECTORS, DUPLICATE_KIND, RETRY_TIERS, TASK_CANCEL_KIND, Headers, Topics
from .trace import SpanRecord

__all__ = [
    "ActionConfig",
    "ApiKeyRecord",
    "COMMAND_SCHEMA_VERSION",
    "CONNECTORS",
    "Command",
    "CommandSource",
    "ConfigRecord",
    "ConnectorOptions",
    "ErrorCode",
    "ErrorInfo",
    "FINAL_STATUSES",
    "Headers",
    "Limits",
    "RESULT_SCHEMA_VERSION",
    "RETRY_TIERS",
    "Result",
    "ResultStatus",
    "RolePolicy",
    "RoutedCommand",
    "SpanRecord",
    "StageTimes",
    "TASK_CANCEL_KIND",
    "DUPLICATE_KIND",
    "TaskCancel",
    "fields_from_command",
    "Topics",
    "WireModel",
    "WorkspaceConfig",
    "api_key_key",
    "command_id_for",
    "dumps",
    "json_depth_exceeds",
    "lost_integer_digits",
    "nested_too_deep",
    "loads",
    "workspace_key",
]
