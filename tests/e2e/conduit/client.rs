//! A Conduit host for a test (the example's five components, its schema
//! and its `sluice.toml`, served by `sluice serve`) and a client that
//! keeps every exchange, for the answers to be checked against the spec's
//! `openapi.yml` afterwards.

use std::cell::RefCell;

use serde_json::{Value as Json, json};

use crate::served::Served;
use crate::support::{Fixture, repo};

/// The example's components.
pub const COMPONENTS: [&str; 5] = ["users", "profiles", "articles", "comments", "conduit-api"];

/// The signing key the tests' hosts are given.
pub const KEY: &str = "e2e-conduit-key-0123456789abcdef0123456789";

/// One request and its answer, as the OpenAPI check reads it.
#[derive(serde::Serialize)]
pub struct Exchange {
    pub method: String,
    /// The spec's path template: `/articles/{slug}`.
    pub template: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Option<Json>,
}

/// A served Conduit and its exchanges.
pub struct Conduit {
    pub fixture: Fixture,
    pub served: Served,
    client: reqwest::blocking::Client,
    pub exchanges: RefCell<Vec<Exchange>>,
}

impl Conduit {
    /// Conduit with `main` on a fresh SQLite file, or at `url`.
    pub fn start(url: Option<String>) -> Conduit {
        let fixture = Fixture::new(&COMPONENTS);
        let example = std::fs::read_to_string(repo().join("examples/conduit/sluice.toml")).expect("sluice.toml");
        let main = url.unwrap_or_else(|| format!("sqlite://{}", fixture.db_path().display()));
        let config = fixture.dir.path().join("conduit.toml");
        std::fs::write(&config, example.replace("sqlite://../../data/conduit/main.db", &main)).expect("config");
        let config = config.to_string_lossy().into_owned();
        let schema = repo().join("examples/conduit/schema").to_string_lossy().into_owned();
        let env = [("SLUICE_CONFIG", config.as_str()), ("CONDUIT_JWT_KEY", KEY)];
        let out = fixture.sluice_env(&env, &["migrate", &schema]);
        assert!(out.status.success(), "{}", crate::support::text(&out.stderr));
        let served = fixture.serve_env(&env, &[]);
        let client =
            reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client");
        Conduit { fixture, served, client, exchanges: RefCell::new(Vec::new()) }
    }

    /// `method path` under `/api` (`template` is the spec's path), with a
    /// token and a JSON body when given: the status and the JSON answer
    /// (`Null` for none).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        template: &str,
        token: Option<&str>,
        body: Option<Json>,
    ) -> (u16, Json) {
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.client.request(method_, self.served.url(&format!("/api{path}")));
        if let Some(token) = token {
            request = request.header("authorization", format!("Token {token}"));
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.served.log()));
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().expect("body");
        let body = if text.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
        };
        self.exchanges.borrow_mut().push(Exchange {
            method: method.to_lowercase(),
            template: template.to_string(),
            status,
            content_type,
            body: body.clone(),
        });
        (status, body.unwrap_or(Json::Null))
    }

    pub fn get(&self, path: &str, template: &str, token: Option<&str>) -> (u16, Json) {
        self.call("GET", path, template, token, None)
    }

    /// Registers a user; their token.
    pub fn register(&self, username: &str, password: &str) -> String {
        let user =
            json!({"user": {"username": username, "email": format!("{username}@conduit.test"), "password": password}});
        let (status, body) = self.call("POST", "/users", "/users", None, Some(user));
        assert_eq!(status, 201, "{body}");
        body["user"]["token"].as_str().expect("a token").to_string()
    }
}
