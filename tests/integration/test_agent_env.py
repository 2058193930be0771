"""The agent's configuration layers (docs/configuration.md, "Layers"): built-in defaults < --config FILE <
REMORA_* environment < command-line flags; --print-config shows each merged value and where it came from; bad
environment values are refused naming the variable; SIGHUP re-reads the file and keeps the environment and flag
layers on top; --opaque-ports replaces the transparent listeners' default list; --control takes a DNS name."""

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

import support
from procutil import Proc, clean_env, free_port

pytestmark = pytest.mark.agent_only("the agent's own settings")

# variables of the test runner's environment that would leak into the agent's layers
_SETTING_VARS = [k for k in os.environ if k.startswith("REMORA_") and k not in (
    "REMORA_AGENT", "REMORA_INIT", "REMORA_BUILD", "REMORA_SANITIZED", "REMORA_AGENT_MODULE_DIR")]


def agent_env(extra=None):
    env = clean_env(extra)
    for k in _SETTING_VARS:
        if not extra or k not in extra:
            env.pop(k, None)
    return env


def run_agent(args, env=None, timeout=10):
    return subprocess.run([support.AGENT] + list(args), env=agent_env(env), capture_output=True, text=True,
                          timeout=timeout)


def print_config(args, env=None):
    r = run_agent(list(args) + ["--print-config"], env)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def write_config(path, origin_port, health_port, admin_port, drain_ms, prefix="/", workers=1):
    text = (f"workers: {workers}\n"
            f"admin: 127.0.0.1:{admin_port}\n"
            f"health: 127.0.0.1:{health_port}\n"
            f"drain_timeout_ms: {drain_ms}\n"
            "listeners:\n"
            "  - name: main\n"
            f"    address: 127.0.0.1:{free_port()}\n"
            "    routes:\n"
            f"      - match: {{path: {{prefix: {prefix}}}}}\n"
            "        cluster: origin\n"
            "clusters:\n"
            "  - name: origin\n"
            f"    endpoints: [\"127.0.0.1:{origin_port}\"]\n")
    with open(path, "w") as f:
        f.write(text)
    return text


def test_layers_precedence_and_provenance(workdir):
    """file < env < flag for each setting, with the source of each in --print-config."""
    cfg = os.path.join(workdir, "agent.yaml")
    text = write_config(cfg, 9, free_port(), free_port(), 5000, workers=1)
    health_line = next(i + 1 for i, line in enumerate(text.splitlines()) if line.startswith("health:"))
    out = print_config(["--config", cfg, "--workers", "3"],
                       {"REMORA_WORKERS": "2", "REMORA_DRAIN_TIMEOUT_MS": "7000", "REMORA_LOG_LEVEL": "debug"})
    assert out["workers"] == {"value": "3", "source": "flag --workers"}, out["workers"]
    assert out["drain-timeout-ms"] == {"value": "7000", "source": "env REMORA_DRAIN_TIMEOUT_MS"}
    assert out["log-level"] == {"value": "debug", "source": "env REMORA_LOG_LEVEL"}
    assert out["health"]["source"] == f"file:{cfg}:{health_line}", out["health"]
    assert out["config"] == {"value": cfg, "source": "flag --config"}
    assert out["outbound-grace-ms"] == {"value": "0", "source": "default"}
    assert out["transparent"] == {"value": False, "source": "default"}

    # the file alone, then the environment alone over it
    out = print_config(["--config", cfg])
    assert out["workers"] == {"value": "1", "source": f"file:{cfg}:1"}
    assert out["drain-timeout-ms"]["value"] == "5000"
    out = print_config([], {"REMORA_CONFIG": cfg, "REMORA_TRANSPARENT": "true", "REMORA_OUTBOUND_GRACE_MS": "2500"})
    assert out["config"] == {"value": cfg, "source": "env REMORA_CONFIG"}
    assert out["transparent"] == {"value": True, "source": "env REMORA_TRANSPARENT"}
    assert out["outbound-grace-ms"] == {"value": "2500", "source": "env REMORA_OUTBOUND_GRACE_MS"}
    assert out["workers"]["source"] == f"file:{cfg}:1"

    # the two variables that keep their older names
    out = print_config(["--transparent"], {"REMORA_IDENTITY_TOKEN_FILE": "/t/token", "REMORA_TRUST_ANCHOR_FILE": "/t/ta.pem"})
    assert out["identity-token"] == {"value": "/t/token", "source": "env REMORA_IDENTITY_TOKEN_FILE"}
    assert out["trust-anchor"] == {"value": "/t/ta.pem", "source": "env REMORA_TRUST_ANCHOR_FILE"}


def test_control_accepts_dns_name():
    out = print_config(["--transparent"], {"REMORA_CONTROL": "remora-control.remora-system.svc:15010",
                                           "REMORA_NODE_ID": "web-0.default", "REMORA_NAMESPACE": "default"})
    assert out["control"] == {"value": "remora-control.remora-system.svc:15010", "source": "env REMORA_CONTROL"}
    assert out["node-id"]["source"] == "env REMORA_NODE_ID"
    out = print_config(["--transparent", "--control", "[::1]:15010"])
    assert out["control"] == {"value": "[::1]:15010", "source": "flag --control"}


@pytest.mark.parametrize("var,value,needle", [
    ("REMORA_WORKERS", "abc", "REMORA_WORKERS must be a number from 1 to 64, got 'abc'"),
    ("REMORA_TRANSPARENT", "yes", "REMORA_TRANSPARENT must be 1, true, 0 or false, got 'yes'"),
    ("REMORA_DRAIN_TIMEOUT_MS", "-5", "REMORA_DRAIN_TIMEOUT_MS must be a number of milliseconds"),
    ("REMORA_OUTBOUND_GRACE_MS", "soon", "REMORA_OUTBOUND_GRACE_MS must be a number of milliseconds"),
    ("REMORA_OPAQUE_PORTS", "3306,99999", 'REMORA_OPAQUE_PORTS: "99999" is not a port (1..65535) or a range of ports A-B'),
    ("REMORA_CONTROL", "remora-control", "REMORA_CONTROL 'remora-control': must be HOST:PORT"),
    ("REMORA_NAMESPACE", "Bad_NS", "REMORA_NAMESPACE 'Bad_NS': must be a DNS-1123 label"),
    ("REMORA_ADMIN", "localhost:15000", "REMORA_ADMIN localhost:15000"),
    ("REMORA_LOG_LEVEL", "loud", "REMORA_LOG_LEVEL must be one of error, warn, info, debug"),
])
def test_bad_environment_value_is_refused(var, value, needle):
    r = run_agent(["--transparent", "--print-config"], {var: value})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert r.stdout == ""


def test_flag_overrides_bad_environment_only_after_it_is_read():
    """A flag wins over the variable, but a malformed variable is still an error (as a malformed flag is)."""
    out = print_config(["--transparent", "--workers", "2"], {"REMORA_WORKERS": "1"})
    assert out["workers"]["value"] == "2"
    r = run_agent(["--transparent", "--workers", "2", "--print-config"], {"REMORA_WORKERS": "0"})
    assert r.returncode == 2 and "REMORA_WORKERS" in r.stderr


def test_opaque_ports_replace_the_default_list(workdir):
    out = print_config(["--transparent", "--opaque-ports", "5432,9000-9002,3306,5432"])
    assert out["opaque-ports"] == {"value": "5432,9000-9002,3306,5432", "source": "flag --opaque-ports"}
    health, admin = free_port(), free_port()
    proc = Proc([support.AGENT, "--transparent", "--outbound-port", str(free_port()), "--inbound-port", str(free_port()),
                 "--health", f"127.0.0.1:{health}", "--admin", f"127.0.0.1:{admin}", "--workers", "1"],
                os.path.join(workdir, "agent.log"), env=agent_env({"REMORA_OPAQUE_PORTS": "5432,9000-9002,3306,5432"}))
    p = support.Proxy(proc, 0, kind="agent", health_port=health, admin_port=admin)
    try:
        support.wait_ready(p, 10)
        status, _, body = p.admin("/config_dump")
        assert status == 200
        listeners = json.loads(body)["listeners"]
        assert {l["name"] for l in listeners} >= {"outbound", "inbound"}
        for l in listeners:
            assert l["opaque_ports"] == [3306, 5432, 9000, 9001, 9002], l
    finally:
        assert proc.stop(signal.SIGTERM, timeout=10) == 0, proc.log_text()[-3000:]


def test_sighup_keeps_environment_and_flag_layers(workdir, h1_origin):
    """SIGHUP re-reads the file: its new route is served, but the env's drain timeout and the flag's worker count
    stay on top of the file's values."""
    cfg = os.path.join(workdir, "agent.yaml")
    health, admin = free_port(), free_port()
    write_config(cfg, h1_origin.port, health, admin, 5000, prefix="/old", workers=1)
    proc = Proc([support.AGENT, "--config", cfg, "--workers", "2"], os.path.join(workdir, "agent.log"),
                env=agent_env({"REMORA_DRAIN_TIMEOUT_MS": "7000"}))
    p = support.Proxy(proc, 0, kind="agent", health_port=health, admin_port=admin)
    try:
        support.wait_ready(p, 10)
        dump = json.loads(p.admin("/config_dump")[2])
        assert (dump["workers"], dump["drain_timeout_ms"]) == (2, 7000), dump
        generation = dump["generation"]
        with open(cfg) as f:
            text = f.read().replace("drain_timeout_ms: 5000", "drain_timeout_ms: 6000").replace("/old", "/new")
        with open(cfg, "w") as f:
            f.write(text)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            dump = json.loads(p.admin("/config_dump")[2])
            if dump["generation"] != generation:
                break
            time.sleep(0.05)
        assert dump["generation"] == generation + 1, proc.log_text()[-2000:]
        assert json.dumps(dump).count("/new") == 1 and "/old" not in json.dumps(dump)
        assert (dump["workers"], dump["drain_timeout_ms"]) == (2, 7000), dump
    finally:
        assert proc.stop(signal.SIGTERM, timeout=10) == 0, proc.log_text()[-3000:]
