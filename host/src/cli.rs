//! The `sluice` commands that only read and print: `list`, `outbox`,
//! `test`, `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use sluice_host::{Host, HostOptions, signature};

pub(crate) fn outbox(host: &Host, channel: &str, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let relays = host.channels().relays();
    let Some(parts) = relays.iter().find(|r| r.channel == channel) else {
        let names: Vec<&str> = relays.iter().map(|r| r.channel.as_str()).collect();
        anyhow::bail!("no bus or http-out channel {channel:?}; the host has: {}", names.join(", "));
    };
    let rows = parts.outbox.status(limit).map_err(|e| anyhow::anyhow!("channel {channel}: {e}"))?;
    let objects: Vec<serde_json::Value> = rows
        .values
        .iter()
        .map(|row| {
            let fields = rows.columns.iter().zip(row).map(|(c, v)| (c.clone(), sluice_host::command::value_json(v)));
            serde_json::Value::Object(fields.collect())
        })
        .collect();
    if json {
        say!("{}", serde_json::Value::Array(objects));
        return Ok(ExitCode::SUCCESS);
    }
    for o in &objects {
        let field = |k: &str| match &o[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let error = field("last_error");
        let error = if error.is_empty() { String::new() } else { format!("  ({error})") };
        say!(
            "{}  {:<9} tries {}  {}  {}{error}",
            field("id"),
            field("state"),
            field("tries"),
            field("service"),
            field("target")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice test`: replays every case and prints a line per case, the
/// differences of each that failed, and `N passed, M failed`.
pub(crate) fn test(options: &HostOptions, paths: &[PathBuf], update: bool) -> anyhow::Result<ExitCode> {
    let registry = Arc::new(Host::services(options)?);
    for failure in registry.failures() {
        eprintln!("warning: skipped {}", failure.error);
    }
    let verdicts = sluice_host::case::diff::run(&registry, paths, update).map_err(anyhow::Error::msg)?;
    let failed = verdicts.iter().filter(|v| !v.passed()).count();
    for verdict in &verdicts {
        if verdict.passed() {
            say!("ok    {}", verdict.path.display());
            continue;
        }
        say!("FAIL  {}", verdict.path.display());
        for difference in &verdict.differences {
            for line in difference.lines() {
                say!("      {line}");
            }
        }
    }
    say!("{} passed, {failed} failed", verdicts.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(crate) fn migrate(host: &Host, dir: &PathBuf, channel: &str) -> anyhow::Result<ExitCode> {
    let target = host.channels.get(channel).with_context(|| {
        format!("no channel {channel:?}; the host has: {}", host.channels.names().collect::<Vec<_>>().join(", "))
    })?;
    let Some(target) = target.sql() else {
        let hint = target.shares().map(|base| format!("; migrate {base}")).unwrap_or_default();
        anyhow::bail!("channel {channel}: a {} channel has no migrations{hint}", target.kind().name());
    };
    // A folder named for the channel's dialect holds that dialect's
    // versions of the scripts (examples/schema/postgres).
    let dialect = dir.join(target.dialect());
    let dir = if dialect.is_dir() { &dialect } else { dir };
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
        say!("{} {name}", if applied { "applied" } else { "already applied" });
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn list(host: &Host, json: bool) {
    if json {
        let services: Vec<_> = host.registry().services().map(|s| signature::service_json(s)).collect();
        let failures: Vec<_> = host
            .registry()
            .failures()
            .iter()
            .map(|f| json!({ "path": f.path, "error": f.error.to_string() }))
            .collect();
        say!("{:#}", json!({ "services": services, "failures": failures }));
        return;
    }
    for svc in host.registry().services() {
        say!("{}  ({})", svc.name, svc.path.display());
        let grants = svc.manifest.summary();
        if grants.is_empty() {
            say!("  may use no channel (grants in {})", svc.manifest_path.display());
        }
        for line in grants {
            say!("  may on {line}");
        }
        for (interface, exporter) in &svc.calls {
            say!("  calls {exporter} through {interface}");
        }
        let mut interface = None;
        for f in &svc.functions {
            if f.interface != interface {
                interface = f.interface.clone();
                say!("  {}", interface.as_deref().unwrap_or("(world)"));
            }
            say!("    {}", signature::signature(f));
        }
    }
    if host.registry().services().next().is_none() {
        say!("no services in {}", host.registry().dir().display());
    }
}

/// `sluice deploy`: puts a service in the deploy store, removes one, rolls
/// one back, or lists them.
pub fn deploy(
    options: &HostOptions,
    files: &[PathBuf],
    remove: Option<&str>,
    rollback: Option<(&str, Option<&str>)>,
    list: bool,
) -> anyhow::Result<ExitCode> {
    let Some(settings) = options.config()?.deploy else {
        anyhow::bail!("no [deploy] in the configuration: add [deploy] url = \"nats://HOST:4222\" to sluice.toml");
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = sluice_host::deploy::Store::open(&settings).await?;
        if list {
            for (name, version) in store.list().await? {
                say!("{name}  {}  manifest {}", version.wasm, version.toml.as_deref().unwrap_or("none"));
            }
        } else if let Some(name) = remove {
            store.remove(name).await?;
            say!("removed {name}: every host following {} stops serving it", settings.bucket);
        } else if let Some((name, to)) = rollback {
            let version = store.rollback(name, to).await?;
            say!("rolled {name} back to {}", version.wasm);
        } else {
            let wasm_path = files.first().ok_or_else(|| anyhow::anyhow!("give the component to deploy"))?;
            let name = wasm_path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let wasm = std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
            let manifest = match files.get(1) {
                Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
                None => None,
            };
            let version = store.put(name, &wasm, manifest.as_deref()).await?;
            say!("deployed {name} {}: every host following {} runs it once it loads", version.wasm, settings.bucket);
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Makes `dir` a mirror of the deploy store, before a host loads it.
pub fn sync(settings: &sluice_host::config::DeploySettings, dir: &std::path::Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let count = runtime.block_on(async {
        let store = sluice_host::deploy::Store::open(settings).await?;
        store.sync(dir).await
    })?;
    tracing::info!("{} holds the {count} service(s) of the deploy store {}", dir.display(), settings.bucket);
    Ok(())
}
