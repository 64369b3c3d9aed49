//! `sluice`: the command line. It parses, runs one library call and prints;
//! everything else lives in the `sluice_host` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::json;
use sluice_host::call::{self, Ending, Mode};
use sluice_host::registry::Service;
use sluice_host::scope::SaveReport;
use sluice_host::{Host, HostOptions, signature, values};
use tracing_subscriber::EnvFilter;

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
    },
    /// List the services, their exported functions and their types.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply the `*.sql` files in DIR, in name order, each once, to a channel.
    Migrate {
        /// Directory of migration scripts.
        dir: PathBuf,
        /// The channel to migrate.
        #[arg(long, default_value = "main")]
        channel: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("error")))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut options = HostOptions::new(&cli.services);
    options.config = cli.config;
    options.data_dir = cli.data_dir;
    options.runtime.cache_dir = cli.cache_dir;
    if let Some(fuel) = cli.fuel {
        options.runtime.limits.fuel = Some(fuel);
    }
    let host = Host::open(&options)?;
    for failure in host.registry.failures() {
        eprintln!("warning: skipped {}", failure.error);
    }
    match cli.command {
        Command::Call { target, args, json, dry_run } => {
            let mode = if dry_run { Mode::DryRun } else { Mode::Save };
            call(&host, &target, &args, json, mode)
        }
        Command::List { json } => {
            list(&host, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { dir, channel } => migrate(&host, &dir, &channel),
    }
}

fn call(host: &Host, target: &str, args: &[String], json: bool, mode: Mode) -> anyhow::Result<ExitCode> {
    let (service, function) = call::parse_target(target).map_err(anyhow::Error::msg)?;
    let func = host.registry.service(service)?.function(function)?;
    func.check_arity(args.len()).map_err(|e| anyhow::anyhow!("{service}.{} {e}", func.name))?;
    let mut vals = Vec::with_capacity(args.len());
    for (i, (arg, (name, ty))) in args.iter().zip(&func.params).enumerate() {
        let val = values::from_arg(ty, arg, name).map_err(|e| {
            // The path starts at the parameter; only name it when the problem
            // is deeper inside the value.
            let at = if e.path == *name { String::new() } else { format!("{}: ", e.path) };
            anyhow::anyhow!(
                "{service}.{}: argument {} ({name}: {}): {at}{}",
                func.name,
                i + 1,
                values::type_name(ty),
                e.message
            )
        })?;
        vals.push(val);
    }
    let report = call::run(host, service, function, &vals, mode)?;
    let result = match report.results.as_slice() {
        [] => serde_json::Value::Null,
        [one] => values::to_json(one),
        many => serde_json::Value::Array(many.iter().map(values::to_json).collect()),
    };
    if json {
        let out = json!({ "scope": report.scope, "result": result, "ending": report.ending });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("result: {result}");
        match &report.ending {
            Ending::Saved(saved) => {
                print_applied(&format!("saved {}", saved.scope), "", saved);
                for failure in &saved.after_commit {
                    println!("warning: {failure}");
                }
            }
            Ending::DryRun(plan) => {
                print_applied(&format!("dry run of {}", plan.scope), "; rolled back, nothing was applied", plan);
            }
            Ending::Discarded { reason, commands } => {
                println!(
                    "discarded {}: {reason}; nothing was applied ({} command(s) were queued)",
                    report.scope,
                    commands.len()
                );
                for c in commands {
                    println!("  {}", c.describe());
                }
            }
        }
    }
    Ok(match report.ending {
        Ending::Saved(_) | Ending::DryRun(_) => ExitCode::SUCCESS,
        // The service refused the request: a distinct code scripts can test.
        Ending::Discarded { .. } => ExitCode::from(2),
    })
}

/// `saved scope-3: 3 command(s) applied in 2 round(s)`, then one line per
/// command with its round, provenance and outcome.
fn print_applied(what: &str, note: &str, report: &SaveReport) {
    println!("{what}: {} command(s) applied in {} round(s){note}", report.applied.len(), report.rounds);
    for a in &report.applied {
        println!("  round {}: {} -> {}", a.round, a.command.describe(), a.outcome);
    }
}

fn list(host: &Host, json: bool) {
    if json {
        let services: Vec<_> = host.registry.services().map(|s| service_json(s)).collect();
        let failures: Vec<_> =
            host.registry.failures().iter().map(|f| json!({ "path": f.path, "error": f.error.to_string() })).collect();
        println!("{:#}", json!({ "services": services, "failures": failures }));
        return;
    }
    for svc in host.registry.services() {
        println!("{}  ({})", svc.name, svc.path.display());
        let grants = svc.manifest.summary();
        if grants.is_empty() {
            println!("  may use no channel (grants in {})", svc.manifest_path.display());
        }
        for line in grants {
            println!("  may on {line}");
        }
        for (interface, exporter) in &svc.calls {
            println!("  calls {exporter} through {interface}");
        }
        let mut interface = None;
        for f in &svc.functions {
            if f.interface != interface {
                interface = f.interface.clone();
                println!("  {}", interface.as_deref().unwrap_or("(world)"));
            }
            println!("    {}", signature::signature(f));
        }
    }
    if host.registry.services().next().is_none() {
        println!("no services in {}", host.registry.dir().display());
    }
}

fn service_json(svc: &Service) -> serde_json::Value {
    let functions: Vec<_> = svc
        .functions
        .iter()
        .map(|f| {
            json!({
                "interface": f.interface,
                "name": f.name,
                "params": f.params.iter().map(|(n, t)| json!({ "name": n, "type": values::type_name(t) })).collect::<Vec<_>>(),
                "results": f.results.iter().map(values::type_name).collect::<Vec<_>>(),
                "signature": signature::signature(f),
            })
        })
        .collect();
    let calls: Vec<_> = svc.calls.iter().map(|(i, e)| json!({ "interface": i, "service": e })).collect();
    let l = &svc.limits;
    let limits = json!({
        "deadline-ms": l.deadline.as_millis() as u64,
        "fuel": l.fuel,
        "memory-mb": l.memory_bytes >> 20,
        "commands": l.commands,
        "command-bytes": l.command_bytes,
        "result-bytes": l.result_bytes,
        "save-rounds": l.save_rounds,
    });
    let h = &svc.hooks;
    let hooks: Vec<&str> =
        [("init", h.init), ("on-save", h.on_save), ("on-finally", h.on_finally), ("dispose", h.dispose)]
            .into_iter()
            .filter_map(|(n, i)| i.map(|_| n))
            .collect();
    json!({
        "name": svc.name,
        "path": svc.path,
        "code": svc.code,
        "functions": functions,
        "calls": calls,
        "hooks": hooks,
        "grants": svc.manifest.summary(),
        "limits": limits,
    })
}

fn migrate(host: &Host, dir: &PathBuf, channel: &str) -> anyhow::Result<ExitCode> {
    let target = host.channels.get(channel).with_context(|| {
        format!("no channel {channel:?}; the host has: {}", host.channels.names().collect::<Vec<_>>().join(", "))
    })?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read migrations directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut scripts = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        scripts.push((name, sql));
    }
    let report = target.migrate(&scripts).with_context(|| format!("channel {channel}"))?;
    for (name, applied) in report {
        println!("{} {name}", if applied { "applied" } else { "already applied" });
    }
    Ok(ExitCode::SUCCESS)
}
