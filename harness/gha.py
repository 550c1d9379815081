"""Run one job of a GitHub Actions workflow on this machine, as GitHub's runner does.

Used by tests/cd to execute cd.yml's deploy job for real. What it does the
way GitHub documents it:

* steps run in order; a step's ``if:`` is an expression, with an implicit
  ``success() &&`` unless it calls a status function (success, failure,
  cancelled, always); the job's status turns to failure at the first failed
  step and to cancelled when the run is cancelled;
* ``run:`` steps run in the effective shell: the step's ``shell``, else the
  job's, else the workflow's ``defaults.run.shell``, else ``bash -e {0}``;
  ``shell: bash`` is ``bash --noprofile --norc -eo pipefail {0}``;
* ``env`` is the workflow's, the job's and the step's, each evaluated as an
  expression template; files named by $GITHUB_OUTPUT, $GITHUB_ENV,
  $GITHUB_PATH and $GITHUB_STEP_SUMMARY are fresh per step, and what a step
  writes there becomes ``steps.<id>.outputs``, later steps' environment and
  PATH, and the summary (``name=value`` and ``name<<DELIMITER`` forms);
* a step's ``timeout-minutes`` stops it as a cancel does (SIGINT to its shell,
  SIGTERM after 7.5 s, the process group killed 2.5 s later) and fails it;
* a cancel of the run (``Runner.cancel_in``: some seconds into a step) stops
  that step the same way and ends it cancelled; the job's status turns to
  cancelled, so only steps whose ``if:`` calls cancelled() or always() run
  after it;
* expressions: literals, ``a.b`` / ``a['b']`` lookups (case-insensitive, a
  missing one is null), ``! == != < <= > >= && ||`` with GitHub's value
  semantics (``||`` gives the first truthy operand, strings compare
  case-insensitively, other mixed types compare as numbers), and the
  functions contains, startsWith, endsWith, format, toJSON.

What only GitHub has comes from the caller: the ``secrets`` and ``vars``
stores, the ``needs`` outputs of earlier jobs, the approval (not modelled: the
job simply runs), and one stand-in per ``uses:`` action.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELLS = {
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"],
    "sh": ["sh", "-e", "{0}"],
}
DEFAULT_SHELL = ["bash", "-e", "{0}"]
# How GitHub's runner stops a step (a cancel, or its timeout-minutes): SIGINT to
# the step's process, SIGTERM after 7.5 s, the process tree killed 2.5 s later.
STOP_SIGNALS = ((signal.SIGINT, 7.5), (signal.SIGTERM, 2.5))
STATUS_FUNCTIONS = re.compile(r"\b(success|failure|cancelled|always)\s*\(", re.IGNORECASE)
TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


class ExpressionError(Exception):
    """An expression this evaluator cannot read; the message names it."""


# --------------------------------------------------------------------------
# expressions
# --------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot read {text[pos:]!r} in expression {text!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 0)) if text.lower().startswith(("0x", "0o")) else float(text)
        except ValueError:
            return math.nan
    return math.nan


def _compare(left: Any, right: Any, op: str) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        a: Any = left.lower()
        b: Any = right.lower()
    elif type(left) is type(right) and not isinstance(left, (dict, list)):
        a, b = left, right
    elif isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return (left is right) if op == "==" else (left is not right) if op == "!=" else False
    else:
        a, b = _number(left), _number(right)
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if isinstance(a, float) and (math.isnan(a) or math.isnan(b)):
        return False
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def _text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _lookup(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        for candidate, item in value.items():
            if str(candidate).lower() == key.lower():
                return item
        return None
    if isinstance(value, list) and key.isdigit():
        index = int(key)
        return value[index] if index < len(value) else None
    return None


class _Parser:
    def __init__(self, text: str, context: Mapping[str, Any], functions: Mapping[str, Any]):
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.context = context
        self.functions = functions

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in expression {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.equality()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.equality()
            value = right if truthy(value) else value
        return value

    def equality(self) -> Any:
        value = self.relation()
        while self.peek() in (("op", "=="), ("op", "!=")):
            op = self.take()[1]
            value = _compare(value, self.relation(), op)
        return value

    def relation(self) -> Any:
        value = self.unary()
        while self.peek() in (("op", "<"), ("op", "<="), ("op", ">"), ("op", ">=")):
            op = self.take()[1]
            value = _compare(value, self.unary(), op)
        return value

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while True:
            token = self.peek()
            if token == ("op", "."):
                self.take()
                value = _lookup(value, self.take()[1])
            elif token == ("op", "["):
                self.take()
                key = self.or_()
                self.take("]")
                value = _lookup(value, _text(key))
            else:
                return value

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if (kind, text) == ("op", "("):
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r} in {self.text!r}")
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        if self.peek() == ("op", "("):
            self.take()
            args: list[Any] = []
            while self.peek() != ("op", ")"):
                args.append(self.or_())
                if self.peek() == ("op", ","):
                    self.take()
            self.take(")")
            function = _lookup(self.functions, lowered)
            if function is None:
                raise ExpressionError(f"unknown function {text}() in {self.text!r}")
            return function(*args)
        if lowered not in {k.lower() for k in self.context}:
            raise ExpressionError(f"unknown context {text!r} in {self.text!r}")
        return _lookup(self.context, lowered)


def _format(template: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: _text(args[int(m.group(1))]), template)


BASE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": lambda hay, needle: (
        any(_compare(item, needle, "==") for item in hay)
        if isinstance(hay, list)
        else _text(needle).lower() in _text(hay).lower()
    ),
    "startswith": lambda a, b: _text(a).lower().startswith(_text(b).lower()),
    "endswith": lambda a, b: _text(a).lower().endswith(_text(b).lower()),
    "format": _format,
    "tojson": lambda value: json.dumps(value, indent=2),
}


def evaluate(text: str, context: Mapping[str, Any], job_status: str = "success") -> Any:
    """The value of one expression (without ``${{ }}``) under ``context``."""
    functions = dict(
        BASE_FUNCTIONS,
        success=lambda: job_status == "success",
        failure=lambda: job_status == "failure",
        cancelled=lambda: job_status == "cancelled",
        always=lambda: True,
    )
    return _Parser(text, context, functions).parse()


def render(text: Any, context: Mapping[str, Any]) -> str:
    """A string with each ``${{ expression }}`` replaced by its value."""
    if not isinstance(text, str):
        return _text(text)
    return TEMPLATE.sub(lambda m: _text(evaluate(m.group(1), context)), text)


def condition(text: Any, context: Mapping[str, Any], job_status: str) -> bool:
    """Whether a step with this ``if:`` runs (None = no ``if:``)."""
    if text is None:
        return job_status == "success"
    if isinstance(text, bool):
        return text and job_status == "success"
    expr = str(text).strip()
    whole = TEMPLATE.fullmatch(expr)
    if whole:
        expr = whole.group(1).strip()
    if not STATUS_FUNCTIONS.search(expr):
        expr = f"success() && ({expr})"
    return truthy(evaluate(expr, context, job_status))


# --------------------------------------------------------------------------
# files the runner hands to each step
# --------------------------------------------------------------------------


def parse_command_file(text: str) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIMITER`` blocks, as GITHUB_OUTPUT/ENV hold them."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        heredoc = re.fullmatch(r"([^=<]+)<<(.+)", line)
        if heredoc and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = heredoc.group(1), heredoc.group(2)
            body: list[str] = []
            while index < len(lines) and lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            if index >= len(lines):
                raise ValueError(f"no closing {delimiter!r} for {name!r}")
            index += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
        else:
            raise ValueError(f"a command file line is neither name=value nor name<<EOF: {line!r}")
    return values


# --------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------


@dataclass
class StepResult:
    id: str
    name: str
    outcome: str  # success, failure, cancelled, skipped
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    code: int | None = None  # a run: step's exit status


@dataclass
class JobResult:
    conclusion: str  # success, failure, cancelled, skipped (the job's own `if:` was false)
    steps: list[StepResult]
    summary: str
    outputs: dict[str, str] = field(default_factory=dict)
    # After a cancel (Runner.cancel_in): the seconds from the cancel to the job's end,
    # which GitHub allows 5 minutes before it kills the job.
    after_cancel_s: float | None = None

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.id == step_id)

    def ran(self) -> list[str]:
        return [s.id for s in self.steps if s.outcome != "skipped"]

    def table(self) -> str:
        return "\n".join(
            f"  {s.outcome:<9} {'' if s.code is None else f'rc={s.code}':<6} {s.seconds:6.1f} s  "
            f"{s.id:<10} {s.name}"
            for s in self.steps
        )


# A stand-in for an action: (step's evaluated `with:`, job context) -> outputs.
Action = Callable[[dict[str, str], dict[str, Any]], dict[str, str]]


@dataclass
class Runner:
    workflow_path: Path
    workspace: Path
    github: dict[str, Any]
    actions: dict[str, Action]
    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    needs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    # Workflow `env:` values replaced before the job runs (e.g. which inventory).
    env_overrides: dict[str, str] = field(default_factory=dict)
    # The runner machine's environment (PATH, HOME, a CA bundle ...).
    machine_env: dict[str, str] = field(default_factory=dict)
    # Called between steps: (step id just finished, result) - to inject a fault.
    after_step: Callable[[str, StepResult], None] | None = None
    # (step id, seconds): the run is cancelled that long after that step started,
    # as a person pressing Cancel does.
    cancel_in: tuple[str, float] | None = None
    log: Callable[[str], None] = print

    def mask(self, text: str) -> str:
        for value in self.secrets.values():
            for line in value.splitlines():
                if len(line.strip()) > 3:
                    text = text.replace(line, "***")
        return text

    def run_job(self, job_id: str) -> JobResult:
        workflow = _load(self.workflow_path)
        job = workflow["jobs"][job_id]
        temp = Path(tempfile.mkdtemp(prefix="gha-runner-"))
        runner_ctx = {"temp": str(temp), "os": "Linux", "arch": "X64"}
        github = dict(self.github, workspace=str(self.workspace))
        context: dict[str, Any] = {
            "github": github,
            "vars": self.variables,
            "secrets": self.secrets,
            "needs": self.needs,
            "inputs": self.inputs,
            "runner": runner_ctx,
            "steps": {},
            "env": {},
            "matrix": {},
            "strategy": {},
            "job": {"status": "success"},
        }
        workflow_env = {k: render(v, context) for k, v in (workflow.get("env") or {}).items()}
        workflow_env.update(self.env_overrides)
        context["env"] = dict(workflow_env)
        # A job's `if:` is read before it starts (no env or steps yet).
        if not condition(job.get("if"), dict(context, env={}), "success"):
            self.log(f"gha: skip job {job_id}")
            return JobResult("skipped", [], "")
        job_env = dict(workflow_env)
        job_env.update({k: render(v, context) for k, v in (job.get("env") or {}).items()})
        added_env: dict[str, str] = {}
        added_path: list[str] = []
        summary: list[str] = []
        results: list[StepResult] = []
        status = "success"
        cancelled_at: float | None = None
        for index, step in enumerate(job.get("steps", [])):
            step_id = step.get("id") or f"__{index}"
            name = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            env = dict(job_env)
            env.update(added_env)
            context["env"] = env
            context["job"] = {"status": status}
            if not condition(step.get("if"), context, status):
                result = StepResult(step_id, name, "skipped")
                context["steps"][step_id] = {
                    "outcome": "skipped",
                    "conclusion": "skipped",
                    "outputs": {},
                }
                results.append(result)
                self.log(f"gha: skip  {name}")
                continue
            env.update({k: render(v, context) for k, v in (step.get("env") or {}).items()})
            context["env"] = env
            self.log(f"gha: run   {name}")
            started = time.monotonic()
            cancel_after = (
                self.cancel_in[1] if self.cancel_in and self.cancel_in[0] == step_id else None
            )
            if "uses" in step:
                result = self._uses(step, step_id, name, context)
            else:
                result = self._run(
                    workflow,
                    job,
                    step,
                    step_id,
                    name,
                    env,
                    added_env,
                    added_path,
                    summary,
                    runner_ctx,
                    github,
                    cancel_after,
                )
            result.seconds = time.monotonic() - started
            results.append(result)
            context["steps"][step_id] = {
                "outcome": result.outcome,
                "conclusion": "success" if step.get("continue-on-error") else result.outcome,
                "outputs": result.outputs,
            }
            self.log(f"gha: {result.outcome:<7} {name} ({result.seconds:.1f} s)")
            if result.outcome == "cancelled":
                status, cancelled_at = "cancelled", time.monotonic()
            elif (
                result.outcome == "failure"
                and not step.get("continue-on-error")
                and status == "success"
            ):
                status = "failure"
            if self.after_step is not None:
                self.after_step(step_id, result)
        outputs = {k: render(v, context) for k, v in (job.get("outputs") or {}).items()}
        after_cancel = None if cancelled_at is None else time.monotonic() - cancelled_at
        return JobResult(status, results, "".join(summary), outputs, after_cancel)

    def _uses(
        self, step: dict[str, Any], step_id: str, name: str, context: dict[str, Any]
    ) -> StepResult:
        action = str(step["uses"]).split("@", 1)[0]
        stand_in = self.actions.get(action)
        if stand_in is None:
            raise ExpressionError(f"no stand-in for action {action} (step {name!r})")
        options = {k: render(v, context) for k, v in (step.get("with") or {}).items()}
        try:
            return StepResult(step_id, name, "success", outputs=stand_in(options, context))
        except Exception as exc:
            self.log(f"gha: {action} failed: {exc}")
            return StepResult(step_id, name, "failure")

    def _run(
        self,
        workflow: dict[str, Any],
        job: dict[str, Any],
        step: dict[str, Any],
        step_id: str,
        name: str,
        env: dict[str, str],
        added_env: dict[str, str],
        added_path: list[str],
        summary: list[str],
        runner_ctx: dict[str, str],
        github: dict[str, Any],
        cancel_after: float | None = None,
    ) -> StepResult:
        temp = Path(runner_ctx["temp"])
        files = {
            key: temp / f"{key.lower()}_{uuid.uuid4().hex}"
            for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
        }
        for path in files.values():
            path.write_text("")
        script = temp / f"{uuid.uuid4()}.sh"
        script.write_text(step["run"])
        shell = effective_shell(workflow, job, step)
        argv = [part.replace("{0}", str(script)) for part in shell]
        process_env = dict(self.machine_env)
        if added_path:
            process_env["PATH"] = os.pathsep.join(
                [*reversed(added_path), process_env.get("PATH", "")]
            )
        process_env.update(
            {
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": str(self.workspace),
                "GITHUB_SHA": str(github.get("sha", "")),
                "GITHUB_REF": str(github.get("ref", "")),
                "GITHUB_REPOSITORY": str(github.get("repository", "")),
                "GITHUB_REPOSITORY_OWNER": str(github.get("repository_owner", "")),
                "GITHUB_EVENT_NAME": str(github.get("event_name", "")),
                "GITHUB_RUN_ID": str(github.get("run_id", "")),
                "GITHUB_ACTOR": str(github.get("actor", "")),
                "GITHUB_SERVER_URL": str(github.get("server_url", "")),
                "RUNNER_TEMP": str(temp),
                **{k: str(v) for k, v in files.items()},
            }
        )
        process_env.update(env)
        proc = subprocess.Popen(
            argv,
            cwd=self.workspace,
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A step has no terminal or input on GitHub's runner.
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        timed_out, cancelled = threading.Event(), threading.Event()
        timers = []
        if step.get("timeout-minutes") is not None:
            limit_s = float(render(step["timeout-minutes"], {"env": env})) * 60
            timers.append(threading.Timer(limit_s, stop_step, (proc, timed_out)))
        if cancel_after is not None:
            timers.append(threading.Timer(cancel_after, stop_step, (proc, cancelled)))
        for timer in timers:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.log("    " + self.mask(line.rstrip("\n")))
            code = proc.wait()
        finally:
            for timer in timers:
                timer.cancel()
        if cancelled.is_set():
            self.log("    Error: The operation was canceled.")
        if timed_out.is_set():
            self.log(
                f"    Error: The action '{name}' has timed out after {limit_s / 60:g} minutes."
            )
            code = code or 1
        outputs = parse_command_file(files["GITHUB_OUTPUT"].read_text())
        added_env.update(parse_command_file(files["GITHUB_ENV"].read_text()))
        added_path.extend(p for p in files["GITHUB_PATH"].read_text().splitlines() if p.strip())
        summary.append(files["GITHUB_STEP_SUMMARY"].read_text())
        if code != 0:
            self.log(f"    Error: Process completed with exit code {code}.")
        outcome = "cancelled" if cancelled.is_set() else "success" if code == 0 else "failure"
        return StepResult(step_id, name, outcome, outputs=outputs, code=code)


def stop_step(proc: subprocess.Popen[str], timed_out: threading.Event) -> None:
    """Stop a step as GitHub's runner does (STOP_SIGNALS), then kill what is left of
    its process group (what it started and left behind); ``timed_out`` says it happened."""
    timed_out.set()
    for sig, grace_s in STOP_SIGNALS:
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def effective_shell(
    workflow: dict[str, Any], job: dict[str, Any], step: dict[str, Any]
) -> list[str]:
    for source in (
        step,
        (job.get("defaults") or {}).get("run") or {},
        (workflow.get("defaults") or {}).get("run") or {},
    ):
        if "shell" in source:
            shell = str(source["shell"])
            if shell in SHELLS:
                return list(SHELLS[shell])
            parts = shell.split()
            return parts if "{0}" in parts else [*parts, "{0}"]
    return list(DEFAULT_SHELL)


def _load(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ExpressionError(f"{path} is not a workflow")
    return data
