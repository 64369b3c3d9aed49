//! The one place the channel kinds are registered. Each kind is one line
//! in each list below: its section of `sluice.toml` (and its `kind =`
//! name), its section of a service's channel grant, and its commands, when
//! it has any. Everything else of a kind is in its own module.

use super::{bus, files, http, http_out, kv, secrets, sql};

super::open::configs! {
    /// A SQL database: SQLite or PostgreSQL.
    Sql("sql", sql::SqlConfig),
    /// Keys and values, in a table of a `sql` channel or in Redis.
    Kv("kv", kv::KvConfig),
    /// A directory, read and written through the `kv` reads and commands.
    Files("files", files::FilesConfig),
    /// A message bus: NATS JetStream, through an outbox.
    Bus("bus", bus::BusConfig),
    /// Outgoing HTTP requests, through an outbox.
    HttpOut("http-out", http_out::HttpOutConfig),
    /// An HTTP API, read at call time.
    Http("http", http::HttpConfig),
    /// Named values from the environment or files, read by the services
    /// granted them.
    Secrets("secrets", secrets::SecretsConfig),
}

super::grant::sections! {
    sql: sql::grant::SqlGrant,
    kv: kv::grant::KvGrant,
    bus: bus::BusGrant,
    http_out: http_out::HttpOutGrant,
    http: http::grant::HttpGrant,
    secrets: secrets::SecretsGrant,
}

super::ops::families! {
    Sql(sql::ops::SqlOp),
    Kv(kv::ops::KvOp),
    Bus(bus::BusOp),
    HttpOut(http_out::HttpOp),
}
