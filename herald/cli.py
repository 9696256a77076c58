"""`herald`: run the whole stack, or its pieces one at a time."""

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import orjson
import typer
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict
from rich.console import Console
from rich.markup import escape

from herald.stack import APPS, PROCESSES, Stack, StackConfig
from kernel.settings import StreamSettings

app = typer.Typer(help="Herald: customer engagement you can run yourself.", no_args_is_help=True, add_completion=False)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

COLORS = {
    "gateway": "bright_cyan", "ingest": "green", "profiles": "yellow", "segmenter": "magenta",
    "scheduler": "blue", "dispatcher": "bright_red", "sinks": "white", "herald": "bold",
}


class DevSettings(StreamSettings):
    """Settings of the local stack `herald up` runs and of `herald migrate` (all overridable with HERALD_*)."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    data_dir: Path = Field(Path(".herald"), description="where the local stack keeps NATS, PostgreSQL and logs")
    host: str = Field("127.0.0.1", description="address the local stack binds")
    gateway_port: int = Field(8000, description="the gateway's port; the services take the next five")
    smtp_port: int = Field(1025, description="the dev SMTP sink's port")
    sink_http_port: int = Field(8025, description="the dev sinks' HTTP port (caught mail, webhooks, pushes, texts)")
    nats_port: int = Field(4222, description="embedded NATS port")
    postgres_port: int = Field(54329, description="embedded PostgreSQL port")
    nats_url: str | None = Field(None, description="use this NATS instead of starting one")
    database_url: str | None = Field(None, description="use this PostgreSQL instead of starting one")
    log_format: str = Field("console", description="`console` or `json`")
    stream_replicas: int = Field(
        1, description="copies of each stream `herald migrate` creates: 1 on one server, 3 on a cluster"
    )


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _database_url(settings: DevSettings) -> str:
    """HERALD_DATABASE_URL, or the database of the local stack `herald up` started."""
    if settings.database_url:
        return settings.database_url
    from herald.stack import load_state

    url = load_state(settings.data_dir).get("database_url")
    if not url:
        raise _fail("set HERALD_DATABASE_URL (or run `make run` first, which records its database)")
    return str(url)


@app.command()
def up() -> None:
    """Start everything: embedded NATS and PostgreSQL (unless URLs are given), migrations, services, sinks."""
    from herald import infra
    from herald.stack import (
        create_workspace,
        load_state,
        migrate,
        new_signing_key,
        save_state,
        workspace_exists,
    )
    from services.dispatcher.credentials import new_secrets_key

    signals = _StopSignals()
    signals.install()
    settings = DevSettings()
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    state = load_state(data)
    say = lambda text: console.print(f"[bold]{'herald':>10} |[/] {text}")  # noqa: E731
    started: list[Any] = []

    def shutdown(stack: Stack | None) -> None:
        signals.stopping = True  # from here on a signal is acknowledged, never raised
        if stack is not None:
            say("stopping services …")
            stack.stop()
        for server in reversed(started):
            server.stop()
        say("stopped; data kept in " + str(data))
        signals.stopped()

    # Every process is started from this, the main thread: the parent-death signal each child gets
    # (infra.die_with_parent) fires when the thread that forked it exits, which must be the process.
    stack: Stack | None = None
    try:
        nats_url = settings.nats_url
        if not nats_url:
            say(f"starting NATS JetStream on 127.0.0.1:{settings.nats_port} (data in {data / 'nats'})")
            nats = infra.EmbeddedNats(data / "nats", settings.nats_port)
            started.append(nats)  # before it starts: a signal while it starts stops it too
            nats_url = nats.start().url
        database_url = settings.database_url
        if not database_url:
            say(f"starting PostgreSQL on 127.0.0.1:{settings.postgres_port} (data in {data / 'postgres'})")
            postgres = infra.EmbeddedPostgres(data / "postgres", settings.postgres_port)
            started.append(postgres)
            database_url = postgres.start().url
        say("applying migrations and creating streams")
        migrate(database_url, nats_url)
        state.setdefault("gateway_signing_key", new_signing_key())
        state.setdefault("secrets_key", new_secrets_key())
        state.pop("internal_token", None)  # the shared secret of earlier versions; signatures replaced it
        state["database_url"], state["nats_url"] = database_url, nats_url
        demo = state.get("workspace")
        if not demo or not asyncio.run(workspace_exists(database_url, demo["workspace_id"])):
            state["workspace"] = demo = asyncio.run(create_workspace(database_url, "Demo"))
            say("created the demo workspace")
        save_state(data, state)

        config = StackConfig(
            data_dir=data, database_url=database_url, nats_url=nats_url, gateway_signing_key=state["gateway_signing_key"],
            secrets_key=state["secrets_key"],
            gateway_port=settings.gateway_port, smtp_port=settings.smtp_port,
            sink_http_port=settings.sink_http_port, host=settings.host, log_format=settings.log_format,
        )
        for name in PROCESSES:
            if name != "sinks" and infra.port_open(config.port(name)):
                raise RuntimeError(f"port {config.port(name)} for {name} is taken; set HERALD_GATEWAY_PORT")

        def echo(name: str, line: str) -> None:
            console.print(f"[{COLORS.get(name, 'white')}]{name:>10} |[/] {escape(line)}")

        stack = Stack(config, echo=echo)
        stack.start()
        stack.wait_ready(timeout=90)
        _banner(config, demo)
        while (gone := stack.first_exited()) is None:
            time.sleep(0.5)
        say(f"[red]{gone} exited unexpectedly (code {stack.procs[gone].returncode}); stopping[/]")
        shutdown(stack)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        shutdown(stack)
    except (RuntimeError, TimeoutError, OSError) as exc:
        shutdown(stack)
        raise _fail(str(exc)) from exc


class _StopSignals:
    """SIGINT and SIGTERM stop `herald up`: the first interrupts whatever it is doing (KeyboardInterrupt,
    as Ctrl-C always did); once it is stopping, later ones are acknowledged once and change nothing.

    Under `make run` a SIGTERM arrives twice (the process group's copy, then the one make passes on), and
    an impatient Ctrl-C repeats: a second KeyboardInterrupt inside the shutdown used to cut it short and
    leave NATS, PostgreSQL and the services running on their ports.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._acknowledged = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on, unless this process was started with them ignored."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self._handle)

    def stopped(self) -> None:
        """Everything is stopped: ignore SIGINT and SIGTERM while the interpreter exits.

        Exiting, Python restores their default action, so a late copy (make's forwarded one) would kill
        the process and turn a clean stop into death by signal; an ignored signal stays ignored.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Interrupt the first time; afterwards, say once that the stack is already stopping."""
        if not self.stopping:
            self.stopping = True  # before raising: a signal right behind this one must not raise again
            raise KeyboardInterrupt
        if self._acknowledged:
            return
        self._acknowledged = True
        note = f"{'herald':>10} | {signal.Signals(signum).name}: already stopping, waiting for every process to exit\n"
        # os.write, not the console: a handler that prints while the main thread is inside a print raises
        # "reentrant call", which would cut the shutdown short just as the KeyboardInterrupt did.
        with contextlib.suppress(OSError, ValueError):
            os.write(sys.stdout.fileno(), note.encode())


def _banner(config: StackConfig, demo: dict[str, str]) -> None:
    gw, sink = config.url("gateway"), config.url("sinks")
    console.print(
        f"""
[bold green]Herald is up.[/] Ctrl-C stops everything; data and keys stay in {config.data_dir}.

  Gateway      {gw}          API docs: {gw}/docs
  Workspace    {demo['workspace_id']}
  Write key    [bold]{demo['write_key']}[/]   (SDKs: HTTP Basic user, empty password)
  API key      [bold]{demo['api_key']}[/]
  Dev sinks    SMTP on {config.host}:{config.smtp_port}; caught mail, webhooks, pushes (APNs, FCM) and texts (Twilio) at {sink}/messages

Try the README's walkthrough with:
  export HERALD={gw} WRITE_KEY={demo['write_key']} API_KEY={demo['api_key']}
"""
    )


@app.command()
def migrate(
    check: Annotated[bool, typer.Option("--check", help="apply nothing; exit 1 if any schema is behind")] = False,
    wait: Annotated[
        float | None,
        typer.Option("--wait", metavar="SECONDS", help="apply nothing; wait until every schema is up to date"),
    ] = None,
) -> None:
    """Apply every service's migrations (one schema each) and create the JetStream streams."""
    from kernel.migrate import pending_schemas

    settings = DevSettings()
    database_url = _database_url(settings)
    if check or wait is not None:
        deadline = time.monotonic() + (wait or 0)
        while True:
            try:
                behind = asyncio.run(pending_schemas(database_url))
            except OSError as exc:  # the database is not reachable yet
                behind = [f"(database unreachable: {exc})"]
            if not behind:
                console.print("every schema is up to date")
                return
            if time.monotonic() >= deadline:
                raise _fail(f"not migrated yet: {', '.join(behind)}; run `herald migrate`", code=1)
            time.sleep(2)
    from herald.stack import migrate as run_migrations

    schemas = run_migrations(database_url, settings.nats_url, settings.stream_replicas)
    console.print(f"migrated schemas: {', '.join(schemas)}" + ("; streams ready" if settings.nats_url else ""))


@app.command()
def serve(service: Annotated[str, typer.Argument(help=f"one of: {', '.join(PROCESSES)}")]) -> None:
    """Run one service (or the dev sinks) in the foreground."""
    import uvicorn

    if service == "sinks":
        from herald.sinks import run_sinks

        settings = DevSettings()
        store = settings.data_dir / "sinks.jsonl"
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            asyncio.run(run_sinks(settings.host, settings.smtp_port, settings.sink_http_port, store))
        except KeyboardInterrupt:
            pass
        return
    if service not in APPS:
        raise _fail(f"unknown service {service!r}; one of: {', '.join(PROCESSES)}")
    app_module, config_module = (importlib.import_module(m) for m in APPS[service])
    try:
        settings = config_module.get_settings()
    except ValidationError as exc:
        problems = "; ".join(f"HERALD_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise _fail(f"{service} cannot start: {problems}") from exc
    from kernel.logging import configure_logging

    configure_logging(service, settings.log_format, settings.log_level)
    port = int(os.environ.get("HERALD_PORT", settings.port))
    uvicorn.run(
        app_module.build(),
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        # The HTTP drain's share of the pod's 45 s grace (see the budget in kernel/bus.py): requests are
        # bounded by the gateway's 10 s upstream timeout, so 10 s finishes every one still worth finishing.
        timeout_graceful_shutdown=10,
        loop="auto",
    )


@app.command("settings")
def settings_command() -> None:
    """Print the configuration reference: every HERALD_* setting, its default and who reads it."""
    from herald.reference import collect, markdown_table, service_settings

    typer.echo("## The services\n\n" + markdown_table(service_settings()))
    typer.echo("\n## The `herald` command (local stack and migrations)\n")
    typer.echo(markdown_table(collect({"herald": DevSettings})))


@app.command()
def replay(
    workspace_id: Annotated[str, typer.Argument(help="the workspace whose messages to replay")],
    since: Annotated[datetime, typer.Option(help="replay what was stored from this time on (UTC if no zone)")],
    stream: Annotated[
        str | None, typer.Option(help="EVENTS (the default), PROFILES, SEGMENTS, SENDS or DEADLETTERS")
    ] = None,
    dead_letters: Annotated[
        bool,
        typer.Option(
            "--dead-letters",
            help="re-drive what consumers gave up on (the same as --stream DEADLETTERS): each dead letter "
            "goes back to its original subject and leaves DEADLETTERS",
        ),
    ] = False,
) -> None:
    """Re-publish one workspace's stored messages; idempotent consumers re-apply only what is missing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from herald.replay import replay as run_replay
    from kernel.bus import DEAD_LETTERS

    settings = DevSettings()
    if not settings.nats_url:
        raise _fail("set HERALD_NATS_URL to the NATS that holds the streams")
    if dead_letters and stream not in (None, DEAD_LETTERS):
        raise _fail(f"--dead-letters re-drives {DEAD_LETTERS}; leave out --stream {stream}")
    stream = DEAD_LETTERS if dead_letters else stream or "EVENTS"
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    doing = "re-driving dead letters" if stream == DEAD_LETTERS else f"replaying {stream}"
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(f"{doing} for {workspace_id}", total=None)
        try:
            count = asyncio.run(
                run_replay(settings.nats_url, stream, workspace_id, since, lambda d, t: bar.update(task, completed=d, total=t))
            )
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    if stream == DEAD_LETTERS:
        console.print(f"re-drove {count} dead letter(s) to their original subjects for workspace {workspace_id}")
    else:
        console.print(f"re-published {count} message(s) from {stream} for workspace {workspace_id}")


@app.command("create-workspace")
def create_workspace_command(
    name: Annotated[str, typer.Argument(help="a name for the workspace")],
    json: Annotated[bool, typer.Option("--json", help="print {workspace_id, write_key, api_key} as JSON")] = False,
) -> None:
    """Create a workspace with a write key and an API key (the API key is shown only now)."""
    from herald.stack import create_workspace

    created = asyncio.run(create_workspace(_database_url(DevSettings()), name))
    if json:
        typer.echo(orjson.dumps({k: created[k] for k in ("workspace_id", "write_key", "api_key")}).decode())
        return
    console.print(
        f"Workspace [bold]{created['workspace_id']}[/] ({escape(name)})\n"
        f"  write key  {created['write_key']}\n"
        f"  API key    {created['api_key']}   [dim](shown once; store it now)[/]"
    )


@app.command("rate-limits")
def rate_limits_command(
    workspace_id: Annotated[str, typer.Argument(help="the workspace whose limits to set")],
    sdk: Annotated[int | None, typer.Option(min=1, help="SDK requests per second (all gateway replicas together)")] = None,
    api: Annotated[int | None, typer.Option(min=1, help="API requests per second (all gateway replicas together)")] = None,
    default: Annotated[bool, typer.Option("--default", help="drop the workspace's own limits; the gateway's defaults apply")] = False,
) -> None:
    """Set one workspace's own rate limits; every gateway replica applies them within a second."""
    from herald.stack import set_rate_limits

    if default == (sdk is not None or api is not None):
        raise _fail("give --sdk and/or --api, or --default")
    limits = None if default else {k: v for k, v in (("sdk", sdk), ("api", api)) if v is not None}
    if not asyncio.run(set_rate_limits(_database_url(DevSettings()), workspace_id, limits)):
        raise _fail(f"no workspace {workspace_id!r}")
    console.print(f"workspace {workspace_id}: " + (", ".join(f"{k} {v}/s" for k, v in limits.items()) if limits else "the gateway's default limits"))


@app.command("keys")
def keys_command(
    public_of: Annotated[
        str | None, typer.Option("--public-of", help="print the public key that goes with this signing key instead")
    ] = None,
    env: Annotated[bool, typer.Option("--env", help="print as HERALD_*=… lines, for an env file or a Secret")] = False,
    secrets: Annotated[
        bool, typer.Option("--secrets", help="make a key for HERALD_SECRETS_KEY (channel credentials at rest) instead")
    ] = False,
) -> None:
    """Make a new Ed25519 key pair for the gateway's request signatures (or, with --secrets, a Fernet key).

    The signing key goes to the gateway alone (HERALD_GATEWAY_SIGNING_KEY); the public key to every
    service (HERALD_GATEWAY_PUBLIC_KEYS). To rotate, add the new public key beside the old one
    (comma-separated), roll the services, switch the gateway's signing key, then drop the old one.
    """
    from kernel import signing

    if secrets:
        from services.dispatcher.credentials import new_secrets_key

        key = new_secrets_key()
        typer.echo(f"HERALD_SECRETS_KEY={key}" if env else key)
        return
    if public_of is not None:
        try:
            typer.echo(signing.public_key_text(public_of))
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        return
    private, public = signing.new_key_pair()
    if env:
        typer.echo(f"HERALD_GATEWAY_SIGNING_KEY={private}\nHERALD_GATEWAY_PUBLIC_KEYS={public}")
        return
    console.print(
        f"signing key  {private}   [dim](HERALD_GATEWAY_SIGNING_KEY: the gateway's alone; keep it secret)[/]\n"
        f"public key   {public}   [dim](HERALD_GATEWAY_PUBLIC_KEYS: every service)[/]"
    )


@app.command("rotate-secrets")
def rotate_secrets_command() -> None:
    """Re-encrypt every stored channel credential under the first key of HERALD_SECRETS_KEY.

    To rotate: put a new key first (`herald keys --secrets`), keeping the old one after it, roll the
    dispatchers, run this, then drop the old key.
    """
    import os

    from kernel.db import make_engine, make_sessionmaker
    from services.dispatcher.credentials import SecretBox
    from services.dispatcher.service import rotate_secrets

    text = os.environ.get("HERALD_SECRETS_KEY", "")
    if not text.strip():
        raise _fail("set HERALD_SECRETS_KEY: the new key first, then the old one(s)")
    try:
        box = SecretBox.from_setting(text)
    except ValueError as exc:
        raise _fail(str(exc)) from exc

    async def run() -> dict[str, int]:
        engine = make_engine(_database_url(DevSettings()), pool_size=1)
        try:
            return await rotate_secrets(make_sessionmaker(engine), box)
        finally:
            await engine.dispose()

    counts = asyncio.run(run())
    console.print(f"rotated {counts['rotated']}, already current {counts['current']}, unreadable {counts['unreadable']}")
    if counts["unreadable"]:
        raise _fail("some secrets are sealed under a key HERALD_SECRETS_KEY no longer holds: put it back after the first", code=1)
