//! Why a file could not become a service, and why a function could not be
//! found on one.

use std::path::PathBuf;

/// Why one file in the services directory could not become a service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file name cannot be a service name.
    #[error("{path}: {reason}")]
    BadName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: String,
    },
    /// The file does not start with the WebAssembly magic bytes.
    #[error("{service}: {path} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, which cannot use the component interfaces.
    #[error(
        "{service}: {path} is a core WebAssembly module, not a component; build it for \
         wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
    },
    /// The component is malformed (truncated, invalid) or cannot be compiled.
    #[error("{service}: {path} is not a valid component: {reason}")]
    Invalid {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
        /// What the validator or compiler said.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error("{service}: cannot be linked: {reason}")]
    Link {
        /// The service name.
        service: String,
        /// What is missing or mismatched.
        reason: String,
    },
    /// The manifest beside the component is unreadable or invalid, or asks
    /// for more than the host's caps.
    #[error("{service}: {reason}")]
    Manifest {
        /// The service name.
        service: String,
        /// What is wrong, naming the file and the setting.
        reason: String,
    },
    /// The component calls a service its manifest does not grant.
    #[error(
        "{service}: imports {interface} from service {exporter}, which its manifest does not grant; \
         grant it in {manifest}: calls = [{exporter:?}]"
    )]
    CallNotGranted {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The service that exports it.
        exporter: String,
        /// Where the importer's manifest is or would be.
        manifest: PathBuf,
    },
    /// The component imports a service interface no loaded service exports.
    #[error("{service}: imports {interface}, but no loaded service exports it")]
    NoExporter {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
    },
    /// More than one service exports the interface a component imports.
    #[error(
        "{service}: imports {interface}, which more than one service exports ({exporters}); \
         keep one"
    )]
    ManyExporters {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The services that export it, comma separated.
        exporters: String,
    },
    /// The service that exports an imported interface failed to load.
    #[error("{service}: imports {interface} from {exporter}, which failed to load")]
    ExporterFailed {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The exporter that failed.
        exporter: String,
    },
    /// The exporter's functions do not match what the importer expects.
    #[error("{service}: imports {interface}, but {exporter} exports it differently: {reason}")]
    Mismatch {
        /// The importing service.
        service: String,
        /// The interface.
        interface: String,
        /// The exporting service.
        exporter: String,
        /// Which function differs and how.
        reason: String,
    },
}

/// Why a function could not be found on a service.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    /// No service has this name.
    #[error("no service {service:?}; loaded services: {known}")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The services that exist, comma separated.
        known: String,
    },
    /// The service exports no function of this name.
    #[error("service {service} has no function {function:?}; it exports: {known}")]
    UnknownFunction {
        /// The service.
        service: String,
        /// The name asked for.
        function: String,
        /// The functions that exist, comma separated.
        known: String,
    },
    /// More than one exported interface has a function of this name.
    #[error("{service}.{function} is ambiguous; use one of: {candidates}")]
    Ambiguous {
        /// The service.
        service: String,
        /// The name asked for.
        function: String,
        /// The qualified names that match.
        candidates: String,
    },
}
