#!/usr/local/bin/python
"""Entrypoint of the Synapse stand-in.

It keeps the behaviour of the official image's docker/start.py that deployments rely on
(written here from that behaviour, not copied):

* ``run [ARGS...]`` (the default): runs ``python -m $SYNAPSE_WORKER ARGS`` (the module is
  ``synapse.app.homeserver`` unless ARGS has ``-m``), adding ``--config-path
  $SYNAPSE_CONFIG_PATH`` (default ``$SYNAPSE_CONFIG_DIR/homeserver.yaml``, ``/data``) when ARGS
  names no config. Python replaces this script (exec), so Synapse is PID 1.
* ``generate``: Synapse's own ``--generate-config`` into /data for $SYNAPSE_SERVER_NAME and
  $SYNAPSE_REPORT_STATS, plus a log config.
* ``migrate_config``: writes a homeserver.yaml from environment variables (a smaller template
  than upstream's), then generates missing keys.

Privileges: with ``UID`` (and ``GID``, default 991) set, Synapse runs as UID:GID; otherwise, when
started as root, as 991:991 (through gosu). The files it must write are given to that owner.
jemalloc is preloaded when present.
"""

import glob
import os
import platform
import secrets
import subprocess
import sys
from typing import Mapping, MutableMapping, NoReturn, Optional

import jinja2

GOSU = "/usr/sbin/gosu"


def log(message: str) -> None:
    print(message, flush=True)


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


def flag(environ: Mapping[str, str], name: str, default: str = "0") -> bool:
    value = environ.get(name, default).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    fail(f'Environment variable "{name}" is set to "{value}", which is neither true nor false.')


def render(template: str, destination: str, values: Mapping[str, object]) -> None:
    with open(template) as f:
        text = jinja2.Template(f.read()).render(**values)
    with open(destination, "w") as f:
        f.write(text)


def owner_of(environ: Mapping[str, str]) -> Optional[str]:
    if "UID" in environ:
        return f"{int(environ['UID'])}:{int(environ.get('GID', '991'))}"
    if os.getuid() == 0:
        return "991:991"
    return None


def as_owner(argv: list, owner: Optional[str]) -> list:
    return [GOSU, owner, *argv] if owner else argv


def require(environ: Mapping[str, str], names: tuple, why: str) -> None:
    for name in names:
        if name not in environ:
            fail(f"Environment variable '{name}' is mandatory {why}.")


def generate(environ: Mapping[str, str], owner: Optional[str]) -> None:
    require(environ, ("SYNAPSE_SERVER_NAME", "SYNAPSE_REPORT_STATS"), "in `generate` mode")
    server_name = environ["SYNAPSE_SERVER_NAME"]
    config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
    config_path = environ.get("SYNAPSE_CONFIG_PATH", f"{config_dir}/homeserver.yaml")
    data_dir = environ.get("SYNAPSE_DATA_DIR", "/data")
    metrics = flag(environ, "SYNAPSE_ENABLE_METRICS")

    log_config = f"{config_dir}/{server_name}.log.config"
    if not os.path.exists(log_config):
        log(f"Creating log config {log_config}")
        render("/conf/log.config", log_config, environ)

    argv = [
        sys.executable, "-m", "synapse.app.homeserver",
        "--server-name", server_name,
        "--report-stats", environ["SYNAPSE_REPORT_STATS"],
        "--config-path", config_path,
        "--config-directory", config_dir,
        "--data-directory", data_dir,
        "--generate-config",
        "--open-private-ports",
    ]
    if metrics:
        argv.append("--enable-metrics")
    if owner:
        log(f"Setting ownership on {data_dir} to {owner}")
        subprocess.run(["chown", owner, data_dir], check=True)
    subprocess.run(as_owner(argv, owner), check=True)


def secret(environ: MutableMapping[str, object], variable: str, path: str) -> None:
    """Takes the secret from the environment, else from its file, else makes (and keeps) one."""
    if variable in environ:
        return
    if os.path.exists(path):
        log(f"Reading {variable} from {path}")
        with open(path) as f:
            environ[variable] = f.read().strip()
        return
    log(f"Generating a random secret for {variable}")
    value = secrets.token_hex(32)
    with open(path, "w") as f:
        f.write(value)
    environ[variable] = value


def migrate_config(environ: Mapping[str, str], owner: Optional[str]) -> None:
    require(
        environ,
        ("SYNAPSE_SERVER_NAME", "SYNAPSE_REPORT_STATS"),
        "when generating a config file",
    )
    config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
    config_path = environ.get("SYNAPSE_CONFIG_PATH", f"{config_dir}/homeserver.yaml")
    values: dict = dict(environ)
    server_name = environ["SYNAPSE_SERVER_NAME"]
    os.makedirs(config_dir, exist_ok=True)
    secret(values, "SYNAPSE_REGISTRATION_SHARED_SECRET", f"/data/{server_name}.registration.key")
    secret(values, "SYNAPSE_MACAROON_SECRET_KEY", f"/data/{server_name}.macaroon.key")
    values["SYNAPSE_APPSERVICES"] = sorted(glob.glob("/data/appservices/*.yaml"))
    values["SYNAPSE_NO_TLS"] = flag(environ, "SYNAPSE_NO_TLS", "0")
    values["SYNAPSE_ENABLE_REGISTRATION"] = flag(environ, "SYNAPSE_ENABLE_REGISTRATION", "0")
    values["SYNAPSE_ENABLE_METRICS"] = flag(environ, "SYNAPSE_ENABLE_METRICS", "0")
    values.setdefault("SYNAPSE_LOG_CONFIG", f"{config_dir}/log.config")

    log(f"Generating synapse config file {config_path}")
    render("/conf/homeserver.yaml", config_path, values)
    log(f"Generating log config file {values['SYNAPSE_LOG_CONFIG']}")
    render("/conf/log.config", values["SYNAPSE_LOG_CONFIG"], values)

    argv = [
        sys.executable, "-m", "synapse.app.homeserver",
        "--config-path", config_path,
        "--keys-directory", config_dir,
        "--generate-keys",
    ]
    if owner:
        log(f"Setting ownership on /data to {owner}")
        subprocess.run(["chown", "-R", owner, "/data"], check=True)
    subprocess.run(as_owner(argv, owner), check=True)


def run(args: list, environ: MutableMapping[str, str], owner: Optional[str]) -> NoReturn:
    if "-m" not in args:
        args = ["-m", environ.get("SYNAPSE_WORKER", "synapse.app.homeserver"), *args]

    jemalloc = f"/usr/lib/{platform.machine()}-linux-gnu/libjemalloc.so.2"
    if os.path.isfile(jemalloc):
        environ["LD_PRELOAD"] = jemalloc
    else:
        log(f"Could not find {jemalloc}, will not use")

    if not any(a.startswith(("--config-path", "-c")) for a in args):
        config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
        config_path = environ.get("SYNAPSE_CONFIG_PATH", f"{config_dir}/homeserver.yaml")
        if not os.path.exists(config_path):
            if "SYNAPSE_SERVER_NAME" in environ:
                fail(
                    f"Config file '{config_path}' does not exist.\n\n"
                    "This image does not generate a config file from environment variables on\n"
                    "every start. Make a static one once with `migrate_config`."
                )
            fail(
                f"Config file '{config_path}' does not exist. Create one with the `generate` "
                "argument (then edit it before starting again), or name an existing one with "
                "SYNAPSE_CONFIG_PATH."
            )
        args = [*args, "--config-path", config_path]

    log("Starting synapse with args " + " ".join(args))
    argv = [sys.executable, *args]
    sys.stdout.flush()
    sys.stderr.flush()
    if owner:
        os.execve(GOSU, ["gosu", owner, *argv], environ)
    os.execve(sys.executable, argv, environ)


def main(argv: list, environ: MutableMapping[str, str]) -> None:
    mode = argv[1] if len(argv) > 1 else "run"
    owner = owner_of(environ)
    if mode == "generate":
        generate(environ, owner)
    elif mode == "migrate_config":
        migrate_config(environ, owner)
    elif mode == "run":
        run(argv[2:], environ, owner)
    else:
        fail(f"Unknown execution mode '{mode}'")


if __name__ == "__main__":
    main(sys.argv, os.environ)
