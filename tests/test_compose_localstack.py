"""docs/local.md's docker compose walkthrough, on LocalStack itself (no Docker engine here).

docker-compose.yml's services run as plain processes with the file's own commands and
environment: LocalStack in host mode at the file's version, from its own venv
(`.venv-localstack`, made by `make test`: LocalStack pins another botocore than ours), and
the sesguard services from this venv. Everything runs inside a private network namespace
that has only loopback (`ip netns`): LocalStack binds every interface, and there it is
reachable from nothing else. The namespace's /etc/hosts (which `ip netns exec` mounts over
/etc/hosts) maps the compose hostnames `localstack` and `moto` to 127.0.0.1, so the file's
endpoints are used unchanged.

Where this differs from `docker compose up`, and why:
- **DynamoDB goes to the moto stand-in** (AWS_ENDPOINT_URL_DYNAMODB, this test only):
  LocalStack's DynamoDB runs DynamoDB Local, a Java server it downloads on first use, and
  these machines cannot reach that download. So the tables here are moto's.
- the `moto` service is sesguard's stand-in (`python -m sesguard.local.localaws PORT`: the moto
  version of the compose image, plus DynamoDB's isolation), on the file's port.
- each service gets its own heartbeat file (each container has its own /tmp); LocalStack
  keeps its files in a temporary directory (host mode) and runs no DNS server (the
  namespace has no resolver to forward to).

The walkthrough is docs/local.md's own code block, run line by line: `docker compose up`
starts the emulators (waiting on the file's own healthchecks), runs bootstrap (exit 0),
then starts sender and worker; `docker compose run --rm bootstrap CMD` runs CMD with
bootstrap's environment; other lines (curl) run as written; `docker compose down` sends
SIGTERM to both services, which must exit 0. A line the walkthrough says needs a moment (the
worker counts what Firehose wrote to S3) is re-run until its check passes, as a user would.

Skipped only where a network namespace cannot be made (not Linux, not root, no `ip`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.aws.test_lifecycle import isv_rule_pattern, valid
from tests.test_container_files import stages

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LS_VENV = ROOT / ".venv-localstack"
WALKTHROUGH_DOC = ROOT / "docs" / "local.md"
SERVICES = ("bootstrap", "sender", "worker")
WAIT = 180.0  # seconds a step may take on a loaded 2-core machine before the test fails


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def compose_walkthrough() -> list[str]:
    """The commands of docs/local.md's compose walkthrough: continuation lines joined,
    comments dropped."""
    section = WALKTHROUGH_DOC.read_text().split("\n## Run with docker compose\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "docs/local.md: no ```sh block in 'Run with docker compose'"
    commands, pending = [], ""
    for raw in match[1].splitlines():
        line = _strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            commands.append(line)
    return commands


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


# ---- the namespace and the processes in it ----------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} (exit {self.popen.poll()}) ---\n" + "\n".join(lines[-n:])


@dataclass
class Stack:
    """docker-compose.yml's services as processes in network namespace `ns`."""

    ns: str
    tmp: Path
    spec: dict[str, Any]
    procs: dict[str, Proc] = field(default_factory=dict)

    # -- running things in the namespace

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                self.argv(argv),
                env=env,
                cwd=self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        self.procs[name] = Proc(name, popen, log)
        return self.procs[name]

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv),
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def until(
        self, what: str, argv: list[str], env: dict[str, str], ok: Callable[[str], bool]
    ) -> str:
        """Run argv until it exits 0 and `ok(stdout)`; its last stdout. Fails after WAIT."""
        deadline = time.monotonic() + WAIT
        while True:
            result = self.run(argv, env)
            if result.returncode == 0 and ok(result.stdout):
                return result.stdout
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: still not so after {WAIT:.0f} s; last run exited"
                    f" {result.returncode}:\n{result.stdout}\n{result.stderr}\n{self.logs()}"
                )
            for proc in self.procs.values():
                if proc.name in ("localstack", "moto") and proc.popen.poll() is not None:
                    pytest.fail(f"{proc.name} died while waiting for {what}\n{self.logs()}")
            time.sleep(1)

    def stop(self, name: str, grace: float = 30.0) -> int:
        proc = self.procs[name]
        if proc.popen.poll() is None:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=30)
        return proc.popen.returncode

    # -- the compose file's services

    def service_env(self, name: str) -> dict[str, str]:
        """The image's ENV, then the file's environment, then this test's differences."""
        image_env: dict[str, str] = {}
        for word, args in stages()[-1]:
            if word == "ENV":
                image_env.update(pair.split("=", 1) for pair in shlex.split(args))
        image_env.pop("PATH", None)
        file_env = {k: str(v) for k, v in self.spec["services"][name]["environment"].items()}
        return {
            **self.shell_env(),
            **image_env,
            **file_env,
            # This test only: LocalStack's DynamoDB needs a download these machines cannot
            # reach (see the module docstring); compose sends DynamoDB to LocalStack.
            "AWS_ENDPOINT_URL_DYNAMODB": self.moto_endpoint,
            "SESGUARD_HEARTBEAT_FILE": str(self.tmp / f"{name}.heartbeat"),
        }

    def shell_env(self) -> dict[str, str]:
        """A user's shell: our venv's commands first (sesguard), then the system's. The
        test's PYTHONPATH goes along: a git worktree that shares another checkout's venv
        runs its own sesguard, not the one the venv was installed from."""
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(self.tmp), "LANG": "C.UTF-8"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    @property
    def moto_endpoint(self) -> str:
        return str(self.spec["services"]["bootstrap"]["environment"]["AWS_ENDPOINT_URL_SESV2"])

    def healthcheck(self, name: str, env: dict[str, str]) -> None:
        test = self.spec["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        self.until(f"{name} healthy ({' '.join(test[1:])})", test[1:], env, lambda _: True)

    def start_emulators(self) -> None:
        ls = self.spec["services"]["localstack"]
        env = {
            "PATH": f"{LS_VENV / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.tmp),
            **{k: str(v) for k, v in ls["environment"].items()},
            # host mode: files under our temporary directory, no DNS server
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(self.tmp / "localstack"),
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
        }
        localstack = [str(LS_VENV / "bin" / "python"), "-m", "localstack.runtime.main"]
        self.start("localstack", localstack, env)
        port = str(urlsplit(self.moto_endpoint).port)
        assert self.spec["services"]["moto"]["environment"]["MOTO_PORT"] == port
        self.start(
            "moto", [sys.executable, "-m", "sesguard.local.localaws", port], self.shell_env()
        )
        self.healthcheck("localstack", self.shell_env())
        self.healthcheck("moto", self.shell_env())
        health = self.run(["curl", "-fsS", "http://localhost:4566/_localstack/health"], env)
        tag = self.spec["services"]["localstack"]["image"].split(":")[-1]
        assert json.loads(health.stdout)["version"] == tag  # the image's version, running

    def up(self) -> None:
        """`docker compose up -d`: bootstrap once (exit 0), then sender and worker."""
        for name in SERVICES:
            for emulator in ("localstack", "moto"):
                depends = self.spec["services"][name]["depends_on"]
                assert depends[emulator]["condition"] == "service_healthy"
        bootstrap = self.run(
            self.spec["services"]["bootstrap"]["command"], self.service_env("bootstrap")
        )
        assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr + self.logs()
        assert "bootstrap: resources created or updated" in bootstrap.stdout, bootstrap.stdout
        for name in ("sender", "worker"):
            svc = self.spec["services"][name]
            assert svc["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
            self.start(name, svc["command"], self.service_env(name))

    def down(self) -> dict[str, int]:
        """`docker compose down` for sesguard's services: SIGTERM, then their stop grace."""
        codes = {}
        for name in ("sender", "worker"):
            grace = float(self.spec["services"][name]["stop_grace_period"].rstrip("s"))
            codes[name] = self.stop(name, grace)
        return codes


def _cannot_run(why: str) -> None:
    """Skip on a developer's machine that lacks a prerequisite; in CI (`.ci/run` sets
    SESGUARD_CI=1) the walkthrough must run, so a missing prerequisite fails instead."""
    if os.environ.get("SESGUARD_CI") == "1":
        pytest.fail(f"CI must run the LocalStack walkthrough, but it {why}")
    pytest.skip(why)


def _make_namespace() -> str:
    if sys.platform != "linux" or shutil.which("ip") is None:
        _cannot_run("needs Linux network namespaces (`ip netns`)")
    if os.geteuid() != 0:
        _cannot_run("needs root to make a network namespace")
    name = f"sesguard-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        _cannot_run(f"cannot make a network namespace here: {made.stderr.strip()}")
    return name


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("curl", "jq", "bash"):
        assert shutil.which(tool), f"the compose walkthrough needs `{tool}`"
    if not (LS_VENV / "bin" / "python").exists():
        _cannot_run(
            f"needs {LS_VENV.name}, which `make test` makes when it finds Python >= 3.12"
            " (LocalStack 4.14 needs it; `make LS_PYTHON=/path/to/python3.12 test`)"
        )
    spec = compose()
    name = _make_namespace()
    etc = Path("/etc/netns") / name
    stack = Stack(name, tmp_path_factory.mktemp("compose"), spec)
    try:
        etc.mkdir(parents=True)
        hosts = " ".join(sorted(h for h in spec["services"] if h in ("localstack", "moto")))
        (etc / "hosts").write_text(f"127.0.0.1 localhost {hosts}\n::1 localhost\n")
        up = subprocess.run(stack.argv(["ip", "link", "set", "lo", "up"]), check=False)
        assert up.returncode == 0
        links = stack.run(["ip", "-o", "link"], stack.shell_env()).stdout.splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo"]  # loopback only
        stack.start_emulators()
        yield stack
    finally:
        for proc in list(stack.procs):
            stack.stop(proc)
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


# ---- the walkthrough ----------------------------------------------------------------------


def _total(out: str, counter: str) -> int | None:
    match = re.search(rf"^{counter}\s+(\d+)\s*$", out, re.M)
    return int(match[1]) if match else None


def _mail(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _notices(out: str, notify_from: str) -> list[dict[str, Any]]:
    return [m for m in _mail(out) if m.get("from") == notify_from]


@pytest.mark.timeout(900)
def test_compose_walkthrough_on_localstack(stack: Stack) -> None:
    notify_from = stack.spec["services"]["worker"]["environment"]["SESGUARD_NOTIFY_FROM"]
    # What each walkthrough line must show; a line that shows it only after the worker
    # counted is re-run until it does (docs/local.md says so). Each check must match a line.
    checks: dict[str, Callable[[str], bool]] = {
        r"sesguard partners show acme$": lambda out: (
            _total(out, "sent") == 1 and _total(out, "delivered") == 1
        ),
        r"sesguard partners show dirty$": lambda out: bool(
            re.search(r"^status\s+paused \(policy: bounce rate", out, re.M)
        ),
        r"^curl .*moto-api": lambda out: len(_notices(out, notify_from)) >= 1,
        r"sesguard events history dirty$": lambda out: "Partner Paused" in out,
    }
    # An ISV application subscribes to Partner Paused with docs/operating.md's one rule, on
    # LocalStack's EventBridge, before anything runs.
    pattern = json.dumps(isv_rule_pattern())
    made = stack.run([sys.executable, "-c", _ISV_RULE, pattern], stack.service_env("worker"))
    assert made.returncode == 0, made.stdout + made.stderr
    used: set[str] = set()
    mail_command = ""
    codes: dict[str, int] = {}
    for command in compose_walkthrough():
        if command.startswith("docker compose up"):
            stack.up()
            continue
        if command.startswith("docker compose logs"):
            continue  # shows the logs; nothing to check
        if command.startswith("docker compose down"):
            codes = stack.down()
            continue
        run = re.fullmatch(r"docker compose run --rm (\w+) (.+)", command, re.S)
        if run:
            env = stack.service_env(run[1])
            script = run[2]
        else:
            assert not command.startswith("docker"), f"walkthrough: unhandled command: {command}"
            env, script = stack.shell_env(), command
        check = next((c for pattern, c in checks.items() if re.search(pattern, script)), None)
        used |= {p for p in checks if re.search(p, script)}
        if script.startswith("curl "):
            mail_command = script
        if check:
            stack.until(command, ["bash", "-c", script], env, check)
        else:
            result = stack.run(["bash", "-c", script], env)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"

    assert used == set(checks), f"walkthrough lines missing for {set(checks) - used}"
    assert codes == {"sender": 0, "worker": 0}, f"SIGTERM exits: {codes}\n{stack.logs()}"

    # With both services stopped, exactly one notice was sent: for the one pause, to the
    # partner's contact.
    out = stack.until("mail listed", ["bash", "-c", mail_command], stack.shell_env(), bool)
    (notice,) = _notices(out, notify_from)
    assert notice["to"] == ["ops@example.com"]
    assert "dirty" in notice["subject"]
    sent_by_partners = [m for m in _mail(out) if m.get("from") != notify_from]
    assert len(sent_by_partners) == 2, out  # the acme job and the dirty job

    # The rule delivered the one pause, once, as its schema says.
    received = stack.until(
        "Partner Paused delivered",
        [sys.executable, "-c", _ISV_RECEIVE],
        stack.service_env("worker"),
        lambda out: json.loads(out) != [],
    )
    (envelope,) = json.loads(received)
    assert envelope["detail-type"] == "Partner Paused", envelope
    detail = valid(envelope)
    assert (detail["partner_id"], detail["actor"]) == ("dirty", "policy")
    assert detail["reason"].startswith("bounce rate")

    # LocalStack's Firehose, as docs/local.md says: one plain (not gzip) object per
    # PutRecordBatch, whatever the stream's compression; the worker counted them all.
    objects = stack.run([sys.executable, "-c", _LIST_EVENT_OBJECTS], stack.service_env("worker"))
    assert objects.returncode == 0, objects.stderr
    heads = json.loads(objects.stdout)
    assert heads and all(head.startswith("{") for head in heads), heads


_ISV_RULE = """
import sys, boto3
sqs, events = boto3.client("sqs"), boto3.client("events")
url = sqs.create_queue(QueueName="isv-partner-paused")["QueueUrl"]
attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
events.put_rule(Name="isv-partner-paused", EventPattern=sys.argv[1])
events.put_targets(Rule="isv-partner-paused", Targets=[{"Id": "app", "Arn": attrs["QueueArn"]}])
"""

# Everything in the ISV's queue (kept invisible: a second read would not see it again).
_ISV_RECEIVE = """
import json, boto3
sqs = boto3.client("sqs")
url = sqs.get_queue_url(QueueName="isv-partner-paused")["QueueUrl"]
out = []
while msgs := sqs.receive_message(
    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600
).get("Messages", []):
    out += [json.loads(m["Body"]) for m in msgs]
print(json.dumps(out))
"""

_LIST_EVENT_OBJECTS = """
import json, boto3
s3 = boto3.client("s3")
account = boto3.client("sts").get_caller_identity()["Account"]
bucket = f"sesguard-ses-events-{account}"
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
heads = [s3.get_object(Bucket=bucket, Key=k)["Body"].read(1).decode("latin-1") for k in keys]
print(json.dumps(heads))
"""


@pytest.mark.timeout(300)
def test_localstack_standard_queue_takes_message_group_ids(stack: Stack) -> None:
    """Every send job carries MessageGroupId = its partner id (the send queue is an SQS fair
    queue: a standard queue whose messages name their tenant). LocalStack's standard queue
    takes it from sesguard's Enqueuer (SendMessageBatch) and from SendMessage, and hands
    it back on receive; a message without one is still fine beside them."""
    result = stack.run([sys.executable, "-c", _GROUP_IDS], stack.service_env("worker"))
    assert result.returncode == 0, result.stdout + result.stderr + stack.logs()
    assert json.loads(result.stdout) == {
        "acme-1": "acme",
        "zeta-1": "zeta",
        "single": "solo",
        "plain": None,
    }


_GROUP_IDS = """
import asyncio, json
from sesguard.aws.clients import open_clients
from sesguard.aws.enqueue import Enqueuer

JOB = {"from": "news@isv.example.com", "to": ["a@example.org"], "subject": "s", "text": "t"}

async def main():
    async with open_clients() as c:
        url = (await c.sqs.create_queue(QueueName="fair-check"))["QueueUrl"]
        attrs = (await c.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))
        assert "FifoQueue" not in attrs["Attributes"], attrs  # a standard queue
        await Enqueuer(c.sqs, url).send(
            [{**JOB, "partner_id": p, "job_id": f"{p}-1"} for p in ("acme", "zeta")]
        )
        await c.sqs.send_message(QueueUrl=url, MessageBody='{"job_id": "single"}',
                                 MessageGroupId="solo")
        await c.sqs.send_message(QueueUrl=url, MessageBody='{"job_id": "plain"}')
        out = {}
        while len(out) < 4:
            resp = await c.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
            )
            for m in resp.get("Messages", []):
                out[json.loads(m["Body"])["job_id"]] = m["Attributes"].get("MessageGroupId")
                await c.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.timeout(900)
def test_bootstrap_on_localstack_alone_names_sesv2_and_its_variable(stack: Stack) -> None:
    """What the compose file used to do: everything, SESv2 included, sent to LocalStack.
    Its free edition answers 501 for SESv2; bootstrap says so in one line and exits 1."""
    env = stack.service_env("bootstrap")
    del env["AWS_ENDPOINT_URL_SESV2"]
    result = stack.run(stack.spec["services"]["bootstrap"]["command"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    endpoint = env["AWS_ENDPOINT_URL"]
    assert result.stderr == (
        f"sesguard: SESv2 is not implemented by {endpoint} — route it to an endpoint that has"
        " it with AWS_ENDPOINT_URL_SESV2\n"
    )
