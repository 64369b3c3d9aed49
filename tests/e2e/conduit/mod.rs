//! The Conduit example (examples/conduit) end to end: the RealWorld spec's
//! flows against `sluice serve` (register, login, the current user and its
//! update, profiles and follows, articles created, read, listed, filtered,
//! paged, changed and deleted, the feed, tags, favorites, comments, and the
//! errors with their status codes), on SQLite and on PostgreSQL; every
//! answer checked against the spec's `openapi.yml` (`openapi.rs`).

mod client;
mod openapi;

use serde_json::{Value as Json, json};

use client::Conduit;

#[test]
fn the_conduit_flows_pass_on_sqlite() {
    let conduit = Conduit::start(None);
    flows(&conduit);
    // A deleted article's comments, tags and favorites went with it.
    for table in ["comments", "article_tags", "favorites"] {
        assert_eq!(conduit.fixture.count(table), 0, "{table}");
    }
    // The key never reaches the log.
    assert!(!conduit.served.log().contains(client::KEY), "the log shows the signing key");
    openapi::check_answers(&conduit);
}

#[test]
fn the_conduit_flows_pass_on_postgres() {
    let Some(db) = crate::postgres::Database::new() else { return };
    let conduit = Conduit::start(Some(db.url()));
    flows(&conduit);
    openapi::check_answers(&conduit);
}

/// The reasons of a 422 (`errors.body`), joined.
fn reasons(body: &Json) -> String {
    body["errors"]["body"]
        .as_array()
        .map(|r| r.iter().filter_map(Json::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

fn flows(c: &Conduit) {
    let jake = users(c);
    let ann = c.register("ann", "annannann");
    profiles(c, &jake, &ann);
    let slug = articles(c, &jake, &ann);
    comments(c, &jake, &ann, &slug);
    removal(c, &jake, &ann, &slug);
    edges(c);
}

/// Registration, login, the current user and its update; jake's token.
fn users(c: &Conduit) -> String {
    let jake = json!({"user": {"username": "jake", "email": "jake@jake.jake", "password": "jakejake"}});
    let (status, body) = c.call("POST", "/users", "/users", None, Some(jake.clone()));
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_eq!((user["username"].as_str(), user["email"].as_str()), (Some("jake"), Some("jake@jake.jake")), "{body}");
    assert_eq!((user["bio"].as_str(), user["image"].as_str()), (Some(""), Some("")), "{body}");
    assert_eq!(user["token"].as_str().map(|t| t.split('.').count()), Some(3), "a JWT: {body}");

    let (status, body) = c.call("POST", "/users", "/users", None, Some(jake));
    assert_eq!(status, 422, "{body}");
    assert!(reasons(&body).contains("username has already been taken"), "{body}");
    assert!(reasons(&body).contains("email has already been taken"), "{body}");
    let blank = json!({"user": {"username": "x", "email": "x@x.io"}});
    let (status, body) = c.call("POST", "/users", "/users", None, Some(blank));
    assert_eq!((status, reasons(&body).as_str()), (422, "password can't be blank"), "{body}");

    let login = |password: &str| {
        let body = json!({"user": {"email": "jake@jake.jake", "password": password}});
        c.call("POST", "/users/login", "/users/login", None, Some(body))
    };
    let (status, body) = login("jakejake");
    assert_eq!(status, 200, "{body}");
    let token = body["user"]["token"].as_str().expect("a token").to_string();
    assert_eq!(login("wrong-password").0, 401);

    let (status, body) = c.get("/user", "/user", Some(&token));
    assert_eq!((status, body["user"]["username"].as_str()), (200, Some("jake")), "{body}");
    assert_eq!(c.get("/user", "/user", None).0, 401);
    assert_eq!(c.get("/user", "/user", Some("not.a.token")).0, 401);
    // A token signed with another key, for the same user.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[2] = "AAAA".repeat(10) + "AAA";
    assert_eq!(c.get("/user", "/user", Some(&parts.join("."))).0, 401);

    let change = json!({"user": {"bio": "I like to skateboard", "image": "https://i.stack.imgur.com/xHWG8.jpg"}});
    let (status, body) = c.call("PUT", "/user", "/user", Some(&token), Some(change));
    assert_eq!((status, body["user"]["bio"].as_str()), (200, Some("I like to skateboard")), "{body}");
    let change = json!({"user": {"password": "jakejake2"}});
    assert_eq!(c.call("PUT", "/user", "/user", Some(&token), Some(change)).0, 200);
    assert_eq!(login("jakejake").0, 401);
    let (status, body) = login("jakejake2");
    assert_eq!(status, 200, "{body}");
    let change = json!({"user": {"email": "not-an-email"}});
    assert_eq!(c.call("PUT", "/user", "/user", Some(&token), Some(change)).0, 422);
    token
}

fn profiles(c: &Conduit, jake: &str, ann: &str) {
    let (status, body) = c.get("/profiles/jake", "/profiles/{username}", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["profile"],
        json!({"username": "jake", "bio": "I like to skateboard", "image": "https://i.stack.imgur.com/xHWG8.jpg", "following": false})
    );
    let follow = |method: &str, token: Option<&str>, name: &str| {
        c.call(method, &format!("/profiles/{name}/follow"), "/profiles/{username}/follow", token, None)
    };
    let (status, body) = follow("POST", Some(ann), "jake");
    assert_eq!((status, body["profile"]["following"].as_bool()), (200, Some(true)), "{body}");
    // Again is no change (and no second row).
    assert_eq!(follow("POST", Some(ann), "jake").0, 200);
    let (_, body) = c.get("/profiles/jake", "/profiles/{username}", Some(ann));
    assert_eq!(body["profile"]["following"], true, "{body}");
    let (status, body) = follow("DELETE", Some(ann), "jake");
    assert_eq!((status, body["profile"]["following"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(follow("POST", Some(ann), "nobody").0, 404);
    assert_eq!(follow("POST", None, "jake").0, 401);
    assert_eq!(follow("POST", Some(jake), "jake").0, 422);
    assert_eq!(c.get("/profiles/nobody", "/profiles/{username}", None).0, 404);
    // ann follows jake for the feed.
    assert_eq!(follow("POST", Some(ann), "jake").0, 200);
}

/// Articles: created, listed, filtered, paged, read, favorited, changed;
/// the slug of the one the rest uses.
fn articles(c: &Conduit, jake: &str, ann: &str) -> String {
    let draft = json!({"article": {"title": "How to train your dragon", "description": "Ever wonder how?",
        "body": "You have to believe", "tagList": ["reactjs", "angularjs", "dragons"]}});
    let (status, body) = c.call("POST", "/articles", "/articles", Some(jake), Some(draft.clone()));
    assert_eq!(status, 201, "{body}");
    let article = &body["article"];
    assert_eq!(article["slug"], "how-to-train-your-dragon", "{body}");
    assert_eq!(article["tagList"], json!(["reactjs", "angularjs", "dragons"]), "the order given: {body}");
    assert_eq!((article["favorited"].as_bool(), article["favoritesCount"].as_u64()), (Some(false), Some(0)));
    assert_eq!(article["author"]["username"], "jake", "{body}");
    assert_eq!(article["createdAt"], article["updatedAt"], "{body}");
    // The same title again: another slug.
    let (status, body) = c.call("POST", "/articles", "/articles", Some(jake), Some(draft.clone()));
    assert_eq!(status, 201, "{body}");
    let second = body["article"]["slug"].as_str().expect("slug").to_string();
    assert!(second.starts_with("how-to-train-your-dragon-"), "{second}");
    let other = json!({"article": {"title": "Ann's notes", "description": "d", "body": "b", "tagList": ["notes"]}});
    assert_eq!(c.call("POST", "/articles", "/articles", Some(ann), Some(other)).0, 201);
    assert_eq!(c.call("POST", "/articles", "/articles", None, Some(draft)).0, 401);
    let blank = json!({"article": {"description": "d", "body": "b"}});
    let (status, body) = c.call("POST", "/articles", "/articles", Some(jake), Some(blank));
    assert_eq!((status, reasons(&body).as_str()), (422, "title can't be blank"), "{body}");

    let list = |query: &str, token: Option<&str>| c.get(&format!("/articles{query}"), "/articles", token);
    let (status, body) = list("", None);
    assert_eq!((status, body["articlesCount"].as_u64()), (200, Some(3)), "{body}");
    let listed = body["articles"].as_array().expect("articles");
    assert_eq!(listed[0]["author"]["username"], "ann", "newest first: {body}");
    assert!(listed.iter().all(|a| a.get("body").is_none()), "lists leave the body out: {body}");
    let slugs = |body: &Json| -> Vec<String> {
        body["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .filter_map(|a| a["slug"].as_str().map(str::to_string))
            .collect()
    };
    let (_, body) = list("?tag=dragons", None);
    assert_eq!((body["articlesCount"].as_u64(), slugs(&body).len()), (Some(2), 2), "{body}");
    let (_, body) = list("?author=ann", None);
    assert_eq!(slugs(&body), ["anns-notes"], "{body}");
    let (_, body) = list("?tag=dragons&limit=1&offset=1", None);
    assert_eq!(
        (body["articlesCount"].as_u64(), slugs(&body)),
        (Some(2), vec!["how-to-train-your-dragon".to_string()]),
        "{body}"
    );
    assert_eq!(list("?limit=0", None).0, 422);
    assert_eq!(list("?offset=-1", None).0, 422);

    let (status, body) =
        c.call("POST", "/articles/how-to-train-your-dragon/favorite", "/articles/{slug}/favorite", Some(ann), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["article"]["favorited"].as_bool(), body["article"]["favoritesCount"].as_u64()),
        (Some(true), Some(1))
    );
    let (_, body) = list("?favorited=ann", Some(ann));
    assert_eq!(slugs(&body), ["how-to-train-your-dragon"], "{body}");
    assert_eq!(body["articles"][0]["favorited"], true, "{body}");
    let (_, body) = c.get("/articles/how-to-train-your-dragon", "/articles/{slug}", None);
    assert_eq!(
        (body["article"]["favorited"].as_bool(), body["article"]["favoritesCount"].as_u64()),
        (Some(false), Some(1))
    );
    assert_eq!(body["article"]["body"], "You have to believe", "{body}");
    let (status, body) =
        c.call("DELETE", "/articles/how-to-train-your-dragon/favorite", "/articles/{slug}/favorite", Some(ann), None);
    assert_eq!((status, body["article"]["favoritesCount"].as_u64()), (200, Some(0)), "{body}");
    assert_eq!(c.call("POST", "/articles/nope/favorite", "/articles/{slug}/favorite", Some(ann), None).0, 404);

    let (status, body) = c.get("/articles/feed", "/articles/feed", Some(ann));
    assert_eq!((status, body["articlesCount"].as_u64()), (200, Some(2)), "ann follows jake: {body}");
    assert_eq!(c.get("/articles/feed", "/articles/feed", None).0, 401);
    let (_, body) = c.get("/articles/feed", "/articles/feed", Some(jake));
    assert_eq!(body["articlesCount"], 0, "jake follows nobody: {body}");

    let edit = |token: &str, slug: &str, body: Json| {
        c.call("PUT", &format!("/articles/{slug}"), "/articles/{slug}", Some(token), Some(body))
    };
    let (status, body) = edit(ann, "how-to-train-your-dragon", json!({"article": {"title": "mine"}}));
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        edit(jake, "how-to-train-your-dragon", json!({"article": {"title": "Did you train your dragon?"}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["article"]["slug"], "did-you-train-your-dragon", "a new title, a new slug: {body}");
    assert_ne!(body["article"]["updatedAt"], body["article"]["createdAt"], "{body}");
    assert_eq!(c.get("/articles/how-to-train-your-dragon", "/articles/{slug}", None).0, 404);

    let (status, body) = c.get("/tags", "/tags", None);
    assert_eq!(status, 200, "{body}");
    // The most used first (each dragon tag twice), then by name.
    assert_eq!(body["tags"], json!(["angularjs", "dragons", "reactjs", "notes"]), "{body}");
    "did-you-train-your-dragon".into()
}

fn comments(c: &Conduit, jake: &str, ann: &str, slug: &str) {
    let path = format!("/articles/{slug}/comments");
    let template = "/articles/{slug}/comments";
    let said = json!({"comment": {"body": "His name was my name too."}});
    let (status, body) = c.call("POST", &path, template, Some(ann), Some(said.clone()));
    assert_eq!(status, 200, "{body}");
    let id = body["comment"]["id"].as_i64().expect("an id");
    assert_eq!(body["comment"]["author"]["username"], "ann", "{body}");
    assert_eq!(c.call("POST", &path, template, Some(jake), Some(said.clone())).0, 200);
    assert_eq!(c.call("POST", &path, template, None, Some(said.clone())).0, 401);
    assert_eq!(c.call("POST", "/articles/nope/comments", template, Some(ann), Some(said)).0, 404);
    let (status, body) = c.call("POST", &path, template, Some(ann), Some(json!({"comment": {"body": " "}})));
    assert_eq!((status, reasons(&body).as_str()), (422, "body can't be blank"), "{body}");

    let (status, body) = c.get(&path, template, Some(jake));
    assert_eq!(status, 200, "{body}");
    let listed = body["comments"].as_array().expect("comments");
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(
        (listed[0]["id"].as_i64(), listed[0]["author"]["following"].as_bool()),
        (Some(id), Some(false)),
        "oldest first: {body}"
    );

    let remove = |token: &str, id: i64| {
        c.call("DELETE", &format!("{path}/{id}"), "/articles/{slug}/comments/{id}", Some(token), None)
    };
    assert_eq!(remove(jake, id).0, 403, "jake may not delete ann's comment");
    let (status, body) = remove(ann, id);
    assert_eq!((status, body), (204, Json::Null));
    assert_eq!(remove(ann, id).0, 404);
    let (_, body) = c.get(&path, template, None);
    assert_eq!(body["comments"].as_array().map(Vec::len), Some(1), "{body}");
}

/// Deleting an article takes its comments, tags and favorites with it.
fn removal(c: &Conduit, jake: &str, ann: &str, slug: &str) {
    let path = format!("/articles/{slug}");
    assert_eq!(c.call("POST", &format!("{path}/favorite"), "/articles/{slug}/favorite", Some(ann), None).0, 200);
    assert_eq!(c.call("DELETE", &path, "/articles/{slug}", Some(ann), None).0, 403);
    assert_eq!(c.call("DELETE", &path, "/articles/{slug}", None, None).0, 401);
    let (status, body) = c.call("DELETE", &path, "/articles/{slug}", Some(jake), None);
    assert_eq!((status, body), (204, Json::Null));
    assert_eq!(c.get(&path, "/articles/{slug}", None).0, 404);
    assert_eq!(c.get(&format!("{path}/comments"), "/articles/{slug}/comments", None).0, 404);
    // The second dragon article and ann's are left; then both go.
    let (_, body) = c.get("/articles", "/articles", None);
    assert_eq!(body["articlesCount"], 2, "{body}");
    for article in body["articles"].as_array().expect("articles") {
        let slug = article["slug"].as_str().expect("slug");
        let owner = if article["author"]["username"] == "ann" { ann } else { jake };
        assert_eq!(c.call("DELETE", &format!("/articles/{slug}"), "/articles/{slug}", Some(owner), None).0, 204);
    }
    let (_, body) = c.get("/tags", "/tags", None);
    assert_eq!(body["tags"], json!([]), "{body}");
}

/// What is not a flow: CORS, unknown routes and methods, bad bodies.
fn edges(c: &Conduit) {
    let client = reqwest::blocking::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, c.served.url("/api/articles"))
        .header("origin", "http://localhost:4200")
        .header("access-control-request-method", "POST")
        .send()
        .expect("OPTIONS");
    assert_eq!(preflight.status().as_u16(), 204);
    let header =
        |name: &str| preflight.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(header("access-control-allow-origin"), "*");
    assert!(header("access-control-allow-headers").contains("Authorization"), "{:?}", preflight.headers());
    assert!(header("access-control-allow-headers").contains("Content-Type"), "{:?}", preflight.headers());

    let patched = client.patch(c.served.url("/api/articles")).send().expect("PATCH");
    assert_eq!(patched.status().as_u16(), 405);
    assert_eq!(patched.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
    assert_eq!(c.get("/nothing/here", "/nothing/here", None).0, 404);
    let garbled = client.post(c.served.url("/api/users/login")).body("{not json").send().expect("POST");
    assert_eq!(garbled.status().as_u16(), 422);
    let answered = c.get("/tags", "/tags", None);
    assert_eq!(answered.0, 200);
    let typed = c.exchanges.borrow().last().and_then(|e| e.content_type.clone());
    assert_eq!(typed.as_deref(), Some("application/json; charset=utf-8"));
}
