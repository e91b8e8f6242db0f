"""Read deploy/sesguard.yaml and resolve its intrinsic functions to concrete values.

Used by tests/test_deploy_*.py (and handy for reviewing a change): resolving with
example parameters turns `!Sub ${EventsBucket.Arn}/events/*` into a real ARN, so tests
compare what the template *means* (IAM resources, environment values, names) with what
the code expects, instead of comparing YAML shapes. Only what the template uses is
implemented; anything else raises, so a new construct cannot slip past the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

TEMPLATE = Path(__file__).with_name("sesguard.yaml")

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",  # moto's default account
    "AWS::Partition": "aws",
    "AWS::StackName": "sesguard",
    "AWS::URLSuffix": "amazonaws.com",
}

# Example values for the parameters without defaults.
EXAMPLE_PARAMETERS: dict[str, Any] = {
    "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sesguard:1.0.0",
    "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    "SecurityGroupIds": ["sg-0123456789abcdef0"],
    "NotifyFrom": "guard@isv.example.com",
}

NO_VALUE = object()


class Unsupported(ValueError):
    """The template uses a construct this resolver does not know."""


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain dicts/lists, tags in their long form (`{"Ref": ...}`)."""
    data = json.loads(json.dumps(cfn_yaml.load(str(path))))
    if not isinstance(data, dict):
        raise Unsupported("template is not a mapping")
    return data


class Resolver:
    def __init__(self, template: Mapping[str, Any], **parameters: Any) -> None:
        self.t = template
        self.params: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in parameters:
                value = parameters[name]
            elif name in EXAMPLE_PARAMETERS:
                value = EXAMPLE_PARAMETERS[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise Unsupported(f"parameter {name} needs a value")
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            elif not spec["Type"].startswith("List<") and not isinstance(value, str):
                value = str(value)  # CloudFormation hands every scalar parameter over as a string
            self.params[name] = value
        self.conditions = {
            name: self._condition(expr) for name, expr in template.get("Conditions", {}).items()
        }

    # ---- resources -----------------------------------------------------------------

    def resource(self, logical_id: str) -> dict[str, Any]:
        res = self.t["Resources"].get(logical_id)
        if res is None:
            raise Unsupported(f"no resource {logical_id}")
        return dict(res)

    def props(self, logical_id: str) -> dict[str, Any]:
        """The resolved Properties of one resource."""
        value = self.resolve(self.resource(logical_id).get("Properties", {}))
        return dict(value)

    def of_type(self, rtype: str) -> list[str]:
        return sorted(k for k, v in self.t["Resources"].items() if v["Type"] == rtype)

    def _arn(self, service: str, rest: str, region: bool = True, account: bool = True) -> str:
        p = PSEUDO
        return (
            f"arn:{p['AWS::Partition']}:{service}:{p['AWS::Region'] if region else ''}:"
            f"{p['AWS::AccountId'] if account else ''}:{rest}"
        )

    def ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        res = self.resource(name)
        rtype, props = res["Type"], res.get("Properties", {})
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{PSEUDO['AWS::Region']}.amazonaws.com/{PSEUDO['AWS::AccountId']}/{self._name(name)}"
        if rtype == "AWS::ECS::TaskDefinition":
            return self._arn("ecs", f"task-definition/{self.resolve(props['Family'])}:1")
        if rtype == "AWS::SNS::Topic":  # Ref of a topic is its ARN
            return self._arn("sns", self._name(name))
        if rtype == "AWS::ApplicationAutoScaling::ScalableTarget":
            return f"{self.resolve(props['ResourceId'])}|{props['ScalableDimension']}|ecs"
        return self._name(name)

    _NAME_PROPS: Mapping[str, str] = {
        "AWS::SQS::Queue": "QueueName",
        "AWS::DynamoDB::Table": "TableName",
        "AWS::S3::Bucket": "BucketName",
        "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName",
        "AWS::SES::ConfigurationSet": "Name",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::Logs::LogStream": "LogStreamName",
        "AWS::ECS::Cluster": "ClusterName",
        "AWS::ECS::Service": "ServiceName",
        "AWS::CloudWatch::Dashboard": "DashboardName",
    }

    def _name(self, logical_id: str) -> str:
        res = self.resource(logical_id)
        prop = self._NAME_PROPS.get(res["Type"])
        if prop and prop in res.get("Properties", {}):
            return str(self.resolve(res["Properties"][prop]))
        return f"{PSEUDO['AWS::StackName']}-{logical_id}-GENERATED"

    def get_att(self, logical_id: str, attr: str) -> str:
        rtype = self.resource(logical_id)["Type"]
        name = self._name(logical_id)
        arns = {
            "AWS::SQS::Queue": lambda: self._arn("sqs", name),
            "AWS::DynamoDB::Table": lambda: self._arn("dynamodb", f"table/{name}"),
            "AWS::S3::Bucket": lambda: f"arn:{PSEUDO['AWS::Partition']}:s3:::{name}",
            "AWS::KinesisFirehose::DeliveryStream": lambda: self._arn(
                "firehose", f"deliverystream/{name}"
            ),
            "AWS::IAM::Role": lambda: self._arn("iam", f"role/{name}", region=False),
            "AWS::Logs::LogGroup": lambda: self._arn("logs", f"log-group:{name}:*"),
            "AWS::Events::Rule": lambda: self._arn("events", f"rule/{name}"),
        }
        if attr == "Arn" and rtype in arns:
            return arns[rtype]()
        if (rtype, attr) in (("AWS::SQS::Queue", "QueueName"), ("AWS::ECS::Service", "Name")):
            return name
        raise Unsupported(f"GetAtt {logical_id}.{attr} ({rtype})")

    # ---- intrinsic functions -------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(v) for v in node]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attr)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                if not isinstance(sep, str):
                    raise Unsupported("Fn::Join delimiter must be a literal string")
                return sep.join(str(v) for v in self.resolve(items))
            if key == "Fn::Split":
                sep, value = arg
                return str(self.resolve(value)).split(sep)
            if key == "Fn::FindInMap":
                name, first, second = (self.resolve(v) for v in arg)
                return self.t["Mappings"][name][str(first)][str(second)]
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.conditions[cond] else no)
            if key.startswith("Fn::"):
                raise Unsupported(f"{key} is not supported by deploy/cfn.py")
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {k: self.resolve(v) for k, v in local.items()}

        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in values:
                return str(values[expr])
            if "." in expr and expr.split(".", 1)[0] in self.t["Resources"]:
                return str(self.get_att(*expr.split(".", 1)))
            value = self.ref(expr)
            if isinstance(value, list):
                raise Unsupported(f"${{{expr}}} is a list")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _condition(self, expr: Any) -> bool:
        ((key, arg),) = expr.items()
        if key == "Fn::Not":
            return not self._condition(arg[0])
        if key == "Fn::Equals":
            a, b = (self.resolve(v) for v in arg)
            return str(a) == str(b)
        if key == "Condition":
            return self._condition(self.t["Conditions"][arg])
        raise Unsupported(f"condition {key}")


def container_environment(resolver: Resolver, task_definition: str) -> dict[str, str]:
    """{NAME: value} of the (single) container of a task definition."""
    (container,) = resolver.props(task_definition)["ContainerDefinitions"]
    return {e["Name"]: str(e["Value"]) for e in container.get("Environment", [])}


@dataclass(frozen=True)
class Statement:
    """One Allow statement of a role's inline policies, resolved."""

    sid: str
    actions: frozenset[str]
    resources: frozenset[str]
    condition: Mapping[str, Mapping[str, list[str]]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(resolver: Resolver, role: str) -> list[Statement]:
    """The Allow statements of a role's inline policies (anything else raises)."""
    out = []
    for policy in resolver.props(role).get("Policies", []):
        for stmt in policy["PolicyDocument"]["Statement"]:
            if stmt["Effect"] != "Allow":
                raise Unsupported(f"{role}: only Allow statements are expected")
            condition = {
                op: {key: [str(v) for v in _as_list(values)] for key, values in keys.items()}
                for op, keys in stmt.get("Condition", {}).items()
            }
            out.append(
                Statement(
                    stmt.get("Sid", ""),
                    frozenset(_as_list(stmt["Action"])),
                    frozenset(_as_list(stmt["Resource"])),
                    condition,
                )
            )
    return out


def role_grants(resolver: Resolver, role: str) -> dict[str, set[str]]:
    """{IAM action: resource ARNs} granted by a role's inline policies (Allow only)."""
    grants: dict[str, set[str]] = {}
    for stmt in role_statements(resolver, role):
        for action in stmt.actions:
            grants.setdefault(action, set()).update(stmt.resources)
    return grants


Context = Mapping[str, str | list[str]]


def _condition_holds(op: str, key: str, patterns: list[str], context: Context) -> bool:
    """IAM's meaning of the condition operators the template uses; others raise."""
    value = context.get(key)
    if op in ("ForAllValues:StringLike", "ForAllValues:StringEquals"):
        # every value matches; no value at all also holds
        values = _as_list(value) if value is not None else []
        if op == "ForAllValues:StringEquals":
            return all(v in patterns for v in values)
        return all(any(fnmatchcase(v, p) for p in patterns) for v in values)
    if op in ("StringLike", "StringEquals"):  # a missing key never matches
        if value is None:
            return False
        if isinstance(value, list):
            raise Unsupported(f"{key} is multivalued: use a ForAllValues/ForAnyValue operator")
        if op == "StringEquals":
            return value in patterns
        return any(fnmatchcase(value, p) for p in patterns)
    raise Unsupported(f"condition operator {op} is not supported by deploy/cfn.py")


def allows(statements: list[Statement], action: str, resource: str, context: Context) -> bool:
    """Whether some Allow statement grants `action` on `resource` with the request's
    condition keys `context` (IAM wildcards * and ? in actions and resources)."""
    for stmt in statements:
        if not any(fnmatchcase(action, a) for a in stmt.actions):
            continue
        if not any(fnmatchcase(resource, r) for r in stmt.resources):
            continue
        if all(
            _condition_holds(op, key, patterns, context)
            for op, keys in stmt.condition.items()
            for key, patterns in keys.items()
        ):
            return True
    return False
