//! `sluice`: the command line. It parses, runs one library call and prints;
//! everything else lives in the `sluice_host` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_host::call::Mode;
use sluice_host::server::{self, ServeOptions};
use sluice_host::watch::Watcher;
use sluice_host::{Host, HostOptions};

/// `println!` for the CLI's output: when whoever reads it has gone away
/// (`sluice list | head -1`), the command ends quietly, as it would on
/// SIGPIPE, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {e}");
        }
    }};
}

mod cli;
mod run_call;

/// Run WebAssembly component services; apply their queued commands only when
/// a scope is saved.
#[derive(Parser)]
#[command(name = "sluice", version)]
struct Cli {
    /// Directory of service components (`NAME.wasm`).
    #[arg(long, global = true, default_value = "services", env = "SLUICE_SERVICES")]
    services: PathBuf,
    /// Channel configuration; without it one SQLite file in the data dir is used.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded database and the compilation cache live.
    #[arg(long, global = true, default_value = "data", env = "SLUICE_DATA")]
    data_dir: PathBuf,
    /// Where compiled components are cached [default: DATA_DIR/cache].
    #[arg(long, global = true, env = "SLUICE_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Meter fuel: each call into a service may use this many units unless
    /// its manifest sets `limits.fuel` (off by default; it costs speed).
    #[arg(long, global = true, env = "SLUICE_FUEL")]
    fuel: Option<u64>,
    /// `serializable`: a save runs the scope's reads again and is a conflict
    /// if any changed; `read-committed`: reads are not checked. Overrides
    /// `[scopes] isolation` [default: serializable].
    #[arg(long, global = true, env = "SLUICE_ISOLATION", value_parser = isolation)]
    isolation: Option<sluice_host::reads::Isolation>,
    /// Runs again of a scope whose save was a conflict. Overrides `[scopes]
    /// retries` [default: 1].
    #[arg(long, global = true, env = "SLUICE_RETRIES")]
    retries: Option<usize>,
    /// Send the host's spans (request, scope, save; call and host-call at
    /// debug) to this OpenTelemetry collector over OTLP/HTTP with JSON
    /// bodies (`/v1/traces` is added). Off by default; the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT turns it on too.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scope: call SERVICE.FUNCTION, then save (or discard if it
    /// returns an error) and print the result and the applied commands.
    Call {
        /// The function, as SERVICE.FUNCTION (e.g. orders.place).
        target: String,
        /// One argument per parameter, as JSON; string and enum parameters
        /// also take plain text (ann is the same as "ann").
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Run the save, every round of it, then roll it back and print what
        /// it would have applied.
        #[arg(long)]
        dry_run: bool,
        /// Also write the scope as a test case to FILE (JSON): the call,
        /// every read with its rows, and every command with its outcome, for
        /// `sluice test` to replay with no database.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Redact a recorded case: `column:NAME` (that column in rows and
        /// commands) or `arg:NAME` (that parameter); every value found there
        /// is replaced wherever it appears. Repeatable.
        #[arg(long, value_name = "RULE")]
        redact: Vec<sluice_host::case::redact::Rule>,
        /// Run the call once per KEY: a repeat of the key (from the CLI or
        /// over HTTP, on any host on the same database) prints what the
        /// first call saved and runs nothing; the same key with other
        /// arguments is an error. Answers are kept in `[idempotency]`'s
        /// channel (`main`) for a day.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Replay test cases (from `sluice call --record`, or written by hand)
    /// against the current services with no database: each read is
    /// answered from the case, and the commands and result are compared
    /// with the case's. Exits 1 when any case differs.
    Test {
        /// Case files, or directories of them (`*.json`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Rewrite the expected part of each case that differs with what
        /// the scope does now.
        #[arg(long)]
        update: bool,
    },
    /// Write a new service project into DIR (default: ./NAME), outside any
    /// services directory; its README says the one command that builds it.
    New {
        /// The service's name: lower-case words joined by '-' (greeter).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: sluice_host::scaffold::Lang,
        /// Where to write it: a new or empty directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List the services, their exported functions and their types.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve the services over HTTP until SIGTERM or Ctrl-C, reloading them
    /// when the services directory changes.
    Serve {
        /// Where to listen; port 0 picks a free port (the URL is printed).
        #[arg(long, default_value = "127.0.0.1:8080", env = "SLUICE_LISTEN")]
        listen: std::net::SocketAddr,
        /// The largest request body accepted, in bytes (larger gets 413).
        #[arg(long, default_value_t = 1 << 20)]
        max_body_bytes: usize,
        /// How many scopes may run at once; later requests wait their turn.
        #[arg(long, default_value_t = 64)]
        max_concurrent: usize,
        /// How long a request's head may take to arrive (then the connection
        /// is closed) and its body may stall (then 408).
        #[arg(long, default_value_t = 10_000)]
        read_timeout_ms: u64,
        /// After SIGTERM or Ctrl-C, how long to wait for the requests in
        /// flight before exiting anyway.
        #[arg(long, default_value_t = 30)]
        drain_seconds: u64,
        /// After SIGTERM or Ctrl-C, how long to go on accepting requests
        /// with `/readyz` answering 503, so that a load balancer stops
        /// sending them before the server stops accepting.
        #[arg(long, default_value_t = 0)]
        unready_seconds: u64,
        /// Do not watch the services directory for changes.
        #[arg(long)]
        no_watch: bool,
        /// Record the scopes of typed calls (`POST /services/…`) as test
        /// cases in DIR, one `SCOPE-ID.json` each, for `sluice test`.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// The share of scopes recorded, from 0 to 1.
        #[arg(long, default_value_t = 1.0, value_name = "SHARE")]
        record_rate: f64,
        /// Redact recorded cases: `column:NAME` or `arg:NAME` (see `call
        /// --redact`), or `header:NAME` (that header of a recorded request;
        /// `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`
        /// always are). Repeatable.
        #[arg(long, value_name = "RULE")]
        redact: Vec<sluice_host::case::redact::Rule>,
        /// Answer typed calls with the whole save report (each applied
        /// command, with its SQL, parameters and tables), as `sluice call
        /// --json` prints it, for an operator's own clients. Off by
        /// default: a client gets the scope, the result and the ending's
        /// status and attempt.
        #[arg(long, env = "SLUICE_REPORTS")]
        reports: bool,
    },
    /// Show where the effects of a `bus` or `http-out` channel are: its
    /// latest outbox rows, newest first (pending, delivered or dead, with
    /// tries and the last error). `sluice serve` delivers them.
    Outbox {
        /// The bus or http-out channel.
        channel: String,
        /// How many rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deploy a service to every host of a fleet (`[deploy]` in
    /// sluice.toml): `sluice deploy NAME.wasm [NAME.toml]` puts it in NATS
    /// JetStream, and each `sluice serve` following the store runs it.
    Deploy {
        /// The component (its file's stem is the service's name), then its
        /// manifest if it has one.
        #[arg(num_args = 1..=2, required_unless_present_any = ["remove", "rollback", "list"])]
        files: Vec<PathBuf>,
        /// Remove the service NAME from the fleet.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["files", "rollback", "list"])]
        remove: Option<String>,
        /// Run an earlier version of NAME again: the one before the
        /// current one, or the one `--to` names.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["files", "list"])]
        rollback: Option<String>,
        /// With `--rollback`: the version, by its component's digest
        /// (`sha256:…`, as `--list` and `/services` show it).
        #[arg(long, value_name = "DIGEST", requires = "rollback")]
        to: Option<String>,
        /// List the deployed services and their digests.
        #[arg(long, conflicts_with = "files")]
        list: bool,
    },
    /// Apply the `*.sql` files in DIR, in name order, each once, to a channel
    /// (from DIR/postgres instead on a PostgreSQL channel, when it exists).
    Migrate {
        /// Directory of migration scripts.
        dir: PathBuf,
        /// The channel to migrate.
        #[arg(long, default_value = "main")]
        channel: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs what it does; a one-shot command only its errors.
    // Compile progress (target `progress`) shows on a terminal whatever the
    // command: a first start with large components takes seconds per file.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let default_level = match (&cli.command, terminal) {
        (Command::Serve { .. }, _) => "info",
        (_, true) => "error,progress=info",
        (_, false) => "error",
    };
    // SLUICE_LOG, else the Rust ecosystem's RUST_LOG, else the default;
    // colours only for a person at a terminal, not in a log file.
    let options = sluice_host::telemetry::LogOptions {
        default_level: default_level.to_string(),
        ansi: terminal,
        json: std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f == "json"),
        otlp_endpoint: cli.otlp_endpoint.clone(),
    };
    // Kept until the command ends, so the last spans are sent.
    let _telemetry = match sluice_host::telemetry::init(&options) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn isolation(text: &str) -> Result<sluice_host::reads::Isolation, String> {
    match text {
        "serializable" => Ok(sluice_host::reads::Isolation::Serializable),
        "read-committed" => Ok(sluice_host::reads::Isolation::ReadCommitted),
        other => Err(format!("{other:?} is not an isolation; use serializable or read-committed")),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A new project needs no host: no services, channels or data dir.
    if let Command::New { name, lang, dir } = &cli.command {
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
        let written = sluice_host::scaffold::new(name, *lang, &dir).map_err(anyhow::Error::msg)?;
        say!(
            "wrote {} files into {}; {} says how to build it",
            written.len(),
            dir.display(),
            dir.join("README.md").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = HostOptions::new(&cli.services);
    options.config = cli.config;
    options.data_dir = cli.data_dir;
    options.runtime.cache_dir = cli.cache_dir;
    if let Some(fuel) = cli.fuel {
        options.runtime.limits.fuel = Some(fuel);
    }
    options.scopes = sluice_host::config::ScopeSettings { isolation: cli.isolation, retries: cli.retries };
    // A replay needs the services only: no channel is opened.
    if let Command::Test { paths, update } = &cli.command {
        return cli::test(&options, paths, *update);
    }
    if let Command::Deploy { files, remove, rollback, to, list } = &cli.command {
        let rollback = rollback.as_deref().map(|name| (name, to.as_deref()));
        return cli::deploy(&options, files, remove.as_deref(), rollback, *list);
    }
    // A host of a fleet mirrors the deploy store into its services
    // directory before it loads them; `serve` then follows the store.
    let deploy = options.config()?.deploy;
    // A store that does not answer does not keep the host from starting:
    // it serves the directory as the last mirror left it, and follows the
    // store once it answers.
    if let (Command::Serve { .. }, Some(settings)) = (&cli.command, &deploy)
        && let Err(e) = cli::sync(settings, &options.services)
    {
        tracing::warn!("the deploy store cannot be read ({e:#}); serving the services directory as it is");
    }
    let host = Host::open(&options)?;
    let owner = sluice_host::triggers::owner(&options);
    for failure in host.registry().failures() {
        eprintln!("warning: skipped {}", failure.error);
    }
    match cli.command {
        Command::Call { target, args, json, dry_run, record, redact, idempotency_key } => {
            let mode = if dry_run { Mode::DryRun } else { Mode::Save };
            let record = record.as_deref().map(|file| (file, redact.as_slice()));
            run_call::call(&host, &target, &args, json, mode, record, idempotency_key.as_deref())
        }
        Command::List { json } => {
            cli::list(&host, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { dir, channel } => cli::migrate(&host, &dir, &channel),
        Command::Outbox { channel, limit, json } => cli::outbox(&host, &channel, limit, json),
        Command::New { .. } | Command::Test { .. } | Command::Deploy { .. } => Ok(ExitCode::SUCCESS),
        Command::Serve {
            listen,
            max_body_bytes,
            max_concurrent,
            read_timeout_ms,
            drain_seconds,
            unready_seconds,
            no_watch,
            record,
            record_rate,
            redact,
            reports,
        } => {
            let read_timeout = Duration::from_millis(read_timeout_ms);
            if !(0.0..=1.0).contains(&record_rate) {
                anyhow::bail!("--record-rate {record_rate} is not a share from 0 to 1");
            }
            let record = match record {
                Some(dir) => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                    Some(sluice_host::server::Recording { dir, rate: record_rate, rules: redact })
                }
                None => None,
            };
            let options = ServeOptions { max_body_bytes, max_concurrent, read_timeout, record, reports };
            let stop =
                Stop { unready: Duration::from_secs(unready_seconds), drain: Duration::from_secs(drain_seconds) };
            let follow = deploy.map(|settings| (settings, options_services(&host)));
            serve(host, &owner, listen, options, !no_watch, stop, follow)
        }
    }
}

/// The services directory of `host`.
fn options_services(host: &Host) -> PathBuf {
    host.registry().dir().to_path_buf()
}

/// A task stopped when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How `sluice serve` stops after a signal: unready but serving for
/// `unready`, then no new connections and up to `drain` for the requests in
/// flight.
struct Stop {
    unready: Duration,
    drain: Duration,
}

fn serve(
    host: Host,
    owner: &str,
    listen: std::net::SocketAddr,
    options: ServeOptions,
    watch: bool,
    Stop { unready, drain }: Stop,
    follow: Option<(sluice_host::config::DeploySettings, PathBuf)>,
) -> anyhow::Result<ExitCode> {
    let host = Arc::new(host);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("cannot read the listening address")?;
        // Held for its Drop, which stops watching.
        let _watcher = if watch { Some(Watcher::start(Arc::clone(&host))?) } else { None };
        // The outbox relays and the services run by messages; dropped (and
        // so stopped) when serving ends.
        let _background = sluice_host::triggers::start(Arc::clone(&host), owner);
        // Each change of the deploy store, written into the services
        // directory, where the watcher reloads it.
        let _following = follow.map(|(settings, dir)| AbortOnDrop(tokio::spawn(sluice_host::deploy::keep_following(settings, dir))));
        let registry = host.registry();
        let names: Vec<&str> = registry.services().map(|s| s.name.as_str()).collect();
        // The first line is for programs (tests read the port from it).
        say!("listening on http://{addr}");
        say!("serving {} service(s): {}", names.len(), names.join(", "));
        if let Some(s) = registry.services().find(|s| s.function("list").is_ok() && s.manifest.http.exposes("list")) {
            say!("try: curl -s -X POST http://{addr}/services/{}/list -d '{{}}'", s.name);
        }
        say!("routes: http://{addr}/openapi.json");
        drop(registry);
        std::io::Write::flush(&mut std::io::stdout()).context("cannot write to stdout")?;
        tracing::info!(%addr, "listening");
        // The drain after a signal has a deadline: a stalled client or a
        // stuck scope does not keep the process alive.
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signalled = Arc::clone(&stopping);
        let readiness = server::Readiness::default();
        let unready_from = readiness.clone();
        let signal = async move {
            shutdown_signal().await;
            unready_from.drain();
            if !unready.is_zero() {
                tracing::info!("unready: /readyz answers 503; still accepting for {} s", unready.as_secs());
                tokio::time::sleep(unready).await;
            }
            signalled.notify_one();
        };
        let read_timeout = options.read_timeout;
        let router = server::router_with(Arc::clone(&host), options, readiness);
        let serving = server::serve(listener, router, read_timeout, signal);
        let cut_off = async {
            stopping.notified().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            served = serving => {
                served?;
                tracing::info!("stopped: every request in flight was answered");
            }
            () = cut_off => {
                tracing::warn!("stopped: requests were still in flight {} s after the signal (--drain-seconds); they are cut off, and a scope that had not committed applies nothing", drain.as_secs());
            }
        }
        anyhow::Ok(())
    })?;
    // Threads still running a scope are not waited for: their scopes are
    // unsaved, so nothing is applied.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stopping: no new connections; waiting for the requests in flight");
}
