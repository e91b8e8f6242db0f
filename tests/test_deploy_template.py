"""deploy/sesguard.yaml: lint-clean, wired to the code's settings, and (as far as moto's
CloudFormation goes) producing exactly the resources `sesguard bootstrap` expects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sesguard.aws.table import TTL_ATTRIBUTE
from sesguard.ops.bootstrap import (
    EXISTS,
    PARTNERS_INDEX_SPEC,
    Report,
    ensure_bucket,
    ensure_queues,
    ensure_table,
)
from sesguard.runtime import metrics
from sesguard.runtime.retry import max_receive_count
from sesguard.settings import Settings, load_settings
from tests.fixtures.cfn_module import load_cfn

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "sesguard.yaml"


cfn = load_cfn()
SERVICES = {"sender": "SenderTaskDefinition", "worker": "WorkerTaskDefinition"}

# Every Settings field is either set by the task definitions or safe at its default in
# production (with the reason). A new field fails this test until someone decides.
SET_BY_TEMPLATE = {
    "table",
    "send_queue",
    "events_queue",
    "events_bucket",
    "events_prefix",
    "firehose_stream",
    "configuration_set",
    "notify_from",
    "event_bus",
    "simulate_events",
    "use_tenants",
    "sender_tasks",
    "concurrency",
    "visibility_timeout",
    "outage_tolerance_seconds",
    "stop_grace_seconds",
    "log_format",
    "log_level",
}
SET_WHEN_PARAMETER_GIVEN = {"max_send_rate": "AccountMaxSendRate"}
SAFE_DEFAULTS = {
    "firehose_role_arn": "read by bootstrap only; the stack creates the Firehose role",
    "ses_firehose_role_arn": "read by bootstrap only; the stack creates the SES role",
    "default_bounce_limit": "default limits for new partners; set per partner by operators",
    "default_complaint_limit": "as above",
    "default_min_volume": "as above",
    "warn_ratio": "as above",
    "window_hours": "the windows of docs/semantics.md (24 h, 7 days)",
    "bucket_retention_days": "TTL of hourly buckets; must only exceed the longest window",
    "gate_cache_seconds": "a few seconds of pause propagation, by design",
    "count_simulator_mail": "false, as SES: simulator mail stays out of the rates",
    "identities_refresh_seconds": "10 minutes: a newly verified identity counts apart soon enough",
    "job_record_days": "once-per-job records outlive SQS retention (14 days)",
    "heartbeat_file": "container-local path shared by the service and `sesguard health`",
    "tenant_identity": "read by the operator CLI (partners add/set --tenant) only",
    "firehose_error_prefix": "the template's ErrorOutputPrefix is errors/ too (the default)",
    "sender_lease_seconds": "30 s: a crashed task's share of the send rate returns that fast",
    "dlq_max_receives": "a floor under the derived maxReceiveCount; the mapping uses the default",
    "max_object_bytes": "1 GiB, 8 times Firehose's largest buffer (docs/design.md)",
    "dlq_settle_seconds": "15 min (sender, dlq redrive): well above Firehose's buffer and lag",
    "firehose_buffer_seconds": "read by bootstrap only; the stack has FirehoseBufferSeconds",
    "status_poll_seconds": "0.25 s: a pause reaches every sender task that fast",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn.load(TEMPLATE)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def r(template: dict[str, Any]) -> Any:
    return cfn.Resolver(template)


def _settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in list(os.environ):
        if var.startswith("SESGUARD_"):
            monkeypatch.delenv(var)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# ---- lint ---------------------------------------------------------------------------


def test_cfn_lint_is_clean_including_informational_checks() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    proc = subprocess.run(
        [str(cfn_lint), "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


# ---- environment vs settings ---------------------------------------------------------


def test_every_settings_field_is_set_or_safe_by_default() -> None:
    fields = set(Settings.model_fields)
    decided = SET_BY_TEMPLATE | set(SET_WHEN_PARAMETER_GIVEN) | set(SAFE_DEFAULTS)
    assert fields - decided == set(), (
        "new Settings field: set it in deploy/sesguard.yaml or add a reason"
    )
    assert decided - fields == set(), "stale entries in this test"
    assert not SET_BY_TEMPLATE & set(SAFE_DEFAULTS)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_task_environment_matches_settings(
    service: str, r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = cfn.container_environment(r, SERVICES[service])
    ours = {k for k in env if k.startswith("SESGUARD_")}
    assert {f"SESGUARD_{f.upper()}" for f in SET_BY_TEMPLATE} == ours
    assert set(env) - ours == {"AWS_REGION"}
    fields = {f"SESGUARD_{f.upper()}" for f in Settings.model_fields}
    assert ours <= fields, f"not Settings fields: {ours - fields}"

    # The values validate, and mean what the rest of the stack created.
    s = _settings_from_env(env, monkeypatch)
    assert s.table == r.ref("Table")
    assert s.send_queue == r.get_att("SendQueue", "QueueName")
    assert s.events_queue == r.get_att("EventsQueue", "QueueName")
    assert s.events_bucket == r.ref("EventsBucket")
    assert s.firehose_stream == r.ref("DeliveryStream")
    assert s.configuration_set == r.ref("ConfigurationSet")
    assert s.notify_from == cfn.EXAMPLE_PARAMETERS["NotifyFrom"]
    assert s.event_bus == r.ref("EventBusName") == "default"
    assert s.log_format == "json"
    assert s.simulate_events is False and s.use_tenants is False
    assert s.max_send_rate is None  # AccountMaxSendRate 0: read from SES
    props = r.props("SendQueue")
    assert s.visibility_timeout == int(props["VisibilityTimeout"])
    assert max_receive_count(s) == int(props["RedrivePolicy"]["maxReceiveCount"])
    assert r.props("EventsQueue")["RedrivePolicy"] == {
        **props["RedrivePolicy"],
        "deadLetterTargetArn": r.get_att("EventsDeadLetterQueue", "Arn"),
    }
    # The code derives each DLQ's name from its queue's.
    assert r.get_att("SendDeadLetterQueue", "QueueName") == f"{s.send_queue}-dlq"
    assert r.get_att("EventsDeadLetterQueue", "QueueName") == f"{s.events_queue}-dlq"


def test_max_receive_count_mapping_is_the_codes_formula(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """For every tolerance the template offers, the queues' maxReceiveCount is what
    bootstrap derives from the same setting, so a transient outage within the tolerance
    never reaches SQS's redrive."""
    allowed = template["Parameters"]["OutageToleranceSeconds"]["AllowedValues"]
    assert set(template["Mappings"]["OutageTolerance"]) == set(allowed)
    for tolerance in allowed:
        r = cfn.Resolver(template, OutageToleranceSeconds=tolerance)
        env = cfn.container_environment(r, "SenderTaskDefinition")
        s = _settings_from_env(env, monkeypatch)
        assert s.outage_tolerance_seconds == float(tolerance)
        for queue in ("SendQueue", "EventsQueue"):
            count = int(r.props(queue)["RedrivePolicy"]["maxReceiveCount"])
            assert count == max_receive_count(s), (tolerance, queue)


def test_the_send_queue_is_standard_so_it_works_as_a_fair_queue(r: Any) -> None:
    """An SQS fair queue is a standard queue whose messages carry MessageGroupId (every
    send job does: its partner id); nothing FIFO may creep in, which would make the group
    an ordering lock instead (one job per partner at a time)."""
    fifo_only = {"FifoQueue", "ContentBasedDeduplication", "DeduplicationScope"}
    for name in ("SendQueue", "SendDeadLetterQueue"):
        props = r.props(name)
        assert not (fifo_only | {"FifoThroughputLimit"}) & set(props), name
        assert not r.get_att(name, "QueueName").endswith(".fifo"), name


def test_both_services_get_the_same_environment(r: Any) -> None:
    sender = cfn.container_environment(r, "SenderTaskDefinition")
    worker = cfn.container_environment(r, "WorkerTaskDefinition")
    assert sender == worker


def test_optional_parameters_reach_the_settings(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = cfn.Resolver(
        template,
        AccountMaxSendRate="14",
        UseTenants="true",
        SenderMaxTasks="7",
        NamePrefix="acme-mail",
    )
    for task in SERVICES.values():
        s = _settings_from_env(cfn.container_environment(r, task), monkeypatch)
        assert s.max_send_rate == 14.0
        assert s.use_tenants is True
        assert s.sender_tasks == 7
        assert s.table == "acme-mail" and s.send_queue == "acme-mail-send-jobs"


def test_default_names_are_the_design_defaults(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = _settings_from_env({}, monkeypatch)
    env = cfn.container_environment(r, "SenderTaskDefinition")
    deployed = _settings_from_env(env, monkeypatch)
    for name in ("table", "send_queue", "events_queue", "firehose_stream", "configuration_set"):
        assert getattr(deployed, name) == getattr(defaults, name), name
    assert deployed.events_bucket == defaults.bucket_name(cfn.PSEUDO["AWS::AccountId"])


def test_stop_timeout_exceeds_every_allowed_grace(template: dict[str, Any], r: Any) -> None:
    le = next(
        m.le for m in Settings.model_fields["stop_grace_seconds"].metadata if hasattr(m, "le")
    )
    param = template["Parameters"]["StopGraceSeconds"]
    assert param["MaxValue"] <= le
    for task in SERVICES.values():
        (container,) = r.props(task)["ContainerDefinitions"]
        assert container["StopTimeout"] > le
        assert container["StopTimeout"] <= 120  # Fargate's maximum


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_container_runs_the_service_with_health_check_and_awslogs(service: str, r: Any) -> None:
    task = r.props(SERVICES[service])
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["TaskRoleArn"] == r.get_att(f"{service.title()}TaskRole", "Arn")
    (container,) = task["ContainerDefinitions"]
    assert container["Command"] == ["sesguard", service]
    assert container["Image"] == cfn.EXAMPLE_PARAMETERS["ImageUri"]
    assert container["HealthCheck"]["Command"] == ["CMD", "sesguard", "health"]
    logs = container["LogConfiguration"]
    assert logs["LogDriver"] == "awslogs"
    assert logs["Options"]["awslogs-group"] == r.ref(f"{service.title()}LogGroup")


# ---- resources -----------------------------------------------------------------------


def test_table(r: Any) -> None:
    t = r.props("Table")
    assert t["BillingMode"] == "PAY_PER_REQUEST"
    assert t["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert t["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert t["SSESpecification"]["SSEEnabled"] is True
    assert {(a["AttributeName"], a["AttributeType"]) for a in t["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
        ("kind", "S"),
    }
    # The same partners index bootstrap creates, so both describe one table.
    assert t["GlobalSecondaryIndexes"] == [PARTNERS_INDEX_SPEC]
    assert r.resource("Table")["DeletionPolicy"] == "Retain"


def test_event_pipeline(r: Any, template: dict[str, Any]) -> None:
    prefix = cfn.container_environment(r, "WorkerTaskDefinition")["SESGUARD_EVENTS_PREFIX"]
    dest = r.props("DeliveryStream")["ExtendedS3DestinationConfiguration"]
    assert dest["BucketARN"] == r.get_att("EventsBucket", "Arn")
    assert dest["CompressionFormat"] == "GZIP"
    assert dest["Prefix"] == f"{prefix}!{{timestamp:yyyy/MM/dd/HH/}}"
    # Error objects must not look like event objects to the notification filter.
    assert dest["ErrorOutputPrefix"].startswith("errors/!{firehose:error-output-type}/")
    assert not dest["ErrorOutputPrefix"].startswith(prefix)
    (proc,) = dest["ProcessingConfiguration"]["Processors"]
    assert proc["Type"] == "AppendDelimiterToRecord"
    assert proc["Parameters"] == [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}]

    bucket = r.props("EventsBucket")
    (qc,) = bucket["NotificationConfiguration"]["QueueConfigurations"]
    assert qc["Queue"] == r.get_att("EventsQueue", "Arn")
    assert qc["Event"] == "s3:ObjectCreated:*"
    assert qc["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": prefix}]
    assert template["Resources"]["EventsBucket"]["DependsOn"] == "EventsQueuePolicy"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-events"]["Prefix"] == prefix
    assert int(rules["expire-events"]["ExpirationInDays"]) >= 8  # backfill needs a window

    (stmt,) = r.props("EventsQueuePolicy")["PolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Resource"] == r.get_att("EventsQueue", "Arn")
    assert stmt["Condition"]["ArnLike"]["aws:SourceArn"] == r.get_att("EventsBucket", "Arn")
    assert stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == r.ref("AWS::AccountId")

    ed = r.props("ConfigurationSetEventDestination")
    assert ed["ConfigurationSetName"] == r.ref("ConfigurationSet")
    fh = ed["EventDestination"]["KinesisFirehoseDestination"]
    assert fh == {
        "IAMRoleARN": r.get_att("SesFirehoseRole", "Arn"),
        "DeliveryStreamARN": r.get_att("DeliveryStream", "Arn"),
    }
    counted = {
        "send",
        "reject",
        "bounce",
        "complaint",
        "delivery",
        "open",
        "click",
        "renderingFailure",
        "deliveryDelay",
    }
    assert set(ed["EventDestination"]["MatchingEventTypes"]) == counted
    trust = r.props("SesFirehoseRole")["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "ses.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceArn"].endswith(
        f":configuration-set/{r.ref('ConfigurationSet')}"
    )


def _target_tracking(r: Any, service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    target = r.props(f"{service}ScalableTarget")
    policy = r.props(f"{service}ScalingPolicy")
    return target, policy


@pytest.mark.parametrize(("service", "queue"), [("Sender", "SendQueue"), ("Worker", "EventsQueue")])
def test_autoscaling_on_backlog_per_task(
    service: str, queue: str, template: dict[str, Any]
) -> None:
    r = cfn.Resolver(template, SenderMaxTasks="7", WorkerMaxTasks="9")
    target, policy = _target_tracking(r, service)
    assert (
        target["ResourceId"]
        == f"service/{r.ref('Cluster')}/{r.get_att(f'{service}Service', 'Name')}"
    )
    assert target["MaxCapacity"] == ("7" if service == "Sender" else "9")
    assert policy["ScalingTargetId"] == r.ref(f"{service}ScalableTarget")
    cfg = policy["TargetTrackingScalingPolicyConfiguration"]
    assert cfg["ScaleInCooldown"] > cfg["ScaleOutCooldown"]  # no flapping on bursts
    queries = {q["Id"]: q for q in cfg["CustomizedMetricSpecification"]["Metrics"]}
    backlog, tasks = (
        queries["backlog"]["MetricStat"]["Metric"],
        queries["tasks"]["MetricStat"]["Metric"],
    )
    assert backlog["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert backlog["Dimensions"] == [{"Name": "QueueName", "Value": r.get_att(queue, "QueueName")}]
    assert tasks["MetricName"] == "RunningTaskCount"
    assert {"Name": "ServiceName", "Value": r.get_att(f"{service}Service", "Name")} in tasks[
        "Dimensions"
    ]
    (out,) = [q for q in queries.values() if q["ReturnData"]]
    assert out["Expression"] == "backlog / tasks"
    cluster = r.props("Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_sender_tasks_never_exceed_the_rate_divisor(template: dict[str, Any]) -> None:
    r = cfn.Resolver(template, SenderMaxTasks="7")
    env = cfn.container_environment(r, "SenderTaskDefinition")
    target, _ = _target_tracking(r, "Sender")
    assert env["SESGUARD_SENDER_TASKS"] == target["MaxCapacity"] == "7"
    # Not even during a deployment: old tasks stop before new ones start.
    assert r.props("SenderService")["DeploymentConfiguration"]["MaximumPercent"] == 100


OPERATOR_EVENTS = (
    "OperatorEventsTopic",
    "OperatorEventsSubscription",
    "OperatorEventsRule",
    "OperatorEventsTopicPolicy",
)


def test_operator_lifecycle_events_are_optional(template: dict[str, Any]) -> None:
    """OperatorEventsEmail: every lifecycle event on the bus to an SNS topic the address
    is subscribed to, which only that rule may publish to; without it, none of it."""
    for name in OPERATOR_EVENTS:
        assert template["Resources"][name]["Condition"] == "HasOperatorEventsEmail"
    assert not cfn.Resolver(template).conditions["HasOperatorEventsEmail"]

    r = cfn.Resolver(template, OperatorEventsEmail="ops@isv.example.com", EventBusName="mail")
    assert r.conditions["HasOperatorEventsEmail"]
    topic = r.ref("OperatorEventsTopic")
    sub = r.props("OperatorEventsSubscription")
    assert sub == {"TopicArn": topic, "Protocol": "email", "Endpoint": "ops@isv.example.com"}
    rule = r.props("OperatorEventsRule")
    assert rule["EventBusName"] == "mail"
    assert rule["EventPattern"] == {"source": ["sesguard"]}
    assert rule["Targets"] == [{"Id": "operators", "Arn": topic}]
    (stmt,) = r.props("OperatorEventsTopicPolicy")["PolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"Service": "events.amazonaws.com"}
    assert stmt["Action"] == "sns:Publish" and stmt["Resource"] == topic
    assert stmt["Condition"] == {
        "ArnEquals": {"aws:SourceArn": r.get_att("OperatorEventsRule", "Arn")}
    }


def test_alarms(template: dict[str, Any]) -> None:
    r = cfn.Resolver(template)
    alarms = {k: r.props(k) for k in r.of_type("AWS::CloudWatch::Alarm")}
    by_metric: dict[tuple[str, str], dict[str, Any]] = {}
    for a in alarms.values():
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        by_metric[(a["MetricName"], dims.get("QueueName") or dims.get("Service", ""))] = a
        assert "AlarmActions" not in a  # no topic given
    for dlq in ("SendDeadLetterQueue", "EventsDeadLetterQueue"):
        a = by_metric[("ApproximateNumberOfMessagesVisible", r.get_att(dlq, "QueueName"))]
        assert (a["ComparisonOperator"], a["Threshold"]) == ("GreaterThanThreshold", 0)
    for q in ("SendQueue", "EventsQueue"):
        assert ("ApproximateAgeOfOldestMessage", r.get_att(q, "QueueName")) in by_metric
    lag = by_metric[("event_lag_seconds", "worker")]
    assert lag["Namespace"] == metrics.NAMESPACE
    assert lag["Statistic"] == "Maximum"  # ServiceMetrics flushes the interval's maximum
    assert "event_lag_seconds" in metrics.GAUGES

    topic = "arn:aws:sns:us-east-1:123456789012:ops"
    with_topic = cfn.Resolver(template, AlarmTopicArn=topic)
    for k in alarms:
        assert with_topic.props(k)["AlarmActions"] == [topic]


def test_dashboard_reads_only_metrics_the_code_emits(r: Any) -> None:
    body = json.loads(r.props("Dashboard")["DashboardBody"])
    seen: set[str] = set()
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        namespace = name = ""
        for row in widget["properties"]["metrics"]:
            if row[0] == "...":
                continue  # same metric, last dimension value changed
            namespace = namespace if row[0] == "." else row[0]
            name = name if row[1] == "." else row[1]
            if namespace == metrics.NAMESPACE:
                seen.add(name)
    assert seen <= set(metrics.UNITS)
    assert {
        "jobs_sent",
        "jobs_held",
        "jobs_dead_lettered",
        "events_counted",
        "malformed_records",
        "partners_paused",
        "event_lag_seconds",
    } <= seen


# ---- moto: deploy the SQS/DynamoDB/S3 part, then let bootstrap inspect it --------------

STATE_RESOURCES = (
    "Table",
    "SendDeadLetterQueue",
    "SendQueue",
    "EventsDeadLetterQueue",
    "EventsQueue",
    "EventsQueuePolicy",
    "EventsBucket",
)
# What moto 5.2.5's CloudFormation does not apply (checked by hand): for these, bootstrap
# has to write them, and the test asserts it wrote exactly what the template declares.
MOTO_CFN_GAPS = {
    "dynamodb ttl expires_at",  # TimeToLiveSpecification ignored
    "sqs policy sesguard-ses-events",  # AWS::SQS::QueuePolicy unsupported
    "s3 notifications sesguard-ses-events-123456789012",  # NotificationConfiguration ignored
}


def _state_template(template: dict[str, Any]) -> str:
    used = {"NamePrefix", "VisibilityTimeout", "OutageToleranceSeconds", "EventsRetentionDays"}
    resources = {k: dict(template["Resources"][k]) for k in STATE_RESOURCES}
    return json.dumps(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Parameters": {k: template["Parameters"][k] for k in used},
            "Mappings": template["Mappings"],
            "Resources": resources,
        }
    )


async def test_moto_stack_is_what_bootstrap_expects(
    template: dict[str, Any],
    r: Any,
    clients: Any,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cf = boto3.client(
        "cloudformation",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    with warnings.catch_warnings():  # moto warns about the QueuePolicy it skips
        warnings.simplefilter("ignore")
        cf.create_stack(StackName="sesguard", TemplateBody=_state_template(template))
    stack = cf.describe_stacks(StackName="sesguard")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"

    # Bootstrap with the settings the task definitions give the services.
    settings = _settings_from_env(cfn.container_environment(r, "WorkerTaskDefinition"), monkeypatch)
    report = Report()
    await ensure_table(clients, settings, report)
    arns = await ensure_queues(clients, settings, report)
    bucket = await ensure_bucket(clients, settings, arns[settings.events_queue], report)
    outcomes = {res: outcome for res, outcome, _ in report.steps}

    changed = {res for res, outcome in outcomes.items() if outcome != EXISTS}
    assert changed <= MOTO_CFN_GAPS, report.steps
    for res in (
        "dynamodb table sesguard",
        "s3 bucket sesguard-ses-events-123456789012",
        "sqs queue sesguard-send-jobs",
        "sqs queue sesguard-send-jobs-dlq",
        "sqs queue sesguard-ses-events",
        "sqs queue sesguard-ses-events-dlq",
    ):
        assert outcomes[res] == EXISTS, res  # attributes, redrive, names: no drift

    # Where bootstrap had to fill a moto gap, it wrote what the template declares.
    assert arns[settings.events_queue] == r.get_att("EventsQueue", "Arn")
    assert bucket == r.ref("EventsBucket")
    url = (await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
    policy = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
    declared = r.props("EventsQueuePolicy")["PolicyDocument"]
    assert json.loads(policy["Attributes"]["Policy"]) == declared
    ttl = await clients.dynamodb.describe_time_to_live(TableName=settings.table)
    assert (
        ttl["TimeToLiveDescription"]["AttributeName"]
        == (r.props("Table")["TimeToLiveSpecification"]["AttributeName"])
    )
    notif = await clients.s3.get_bucket_notification_configuration(Bucket=bucket)
    (qc,) = notif["QueueConfigurations"]
    (declared_qc,) = r.props("EventsBucket")["NotificationConfiguration"]["QueueConfigurations"]
    assert qc["QueueArn"] == declared_qc["Queue"]
    assert qc["Events"] == [declared_qc["Event"]]
    assert qc["Filter"]["Key"]["FilterRules"] == [
        {"Name": rule["Name"], "Value": rule["Value"]}
        for rule in declared_qc["Filter"]["S3Key"]["Rules"]
    ]
    # A second bootstrap over the stack changes nothing at all.
    again = Report()
    await ensure_table(clients, settings, again)
    arns = await ensure_queues(clients, settings, again)
    await ensure_bucket(clients, settings, arns[settings.events_queue], again)
    assert not again.changed, again.steps
