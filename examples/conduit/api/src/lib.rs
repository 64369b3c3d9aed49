//! Conduit component `conduit-api`: the RealWorld Conduit API
//! (`../shared/realworld/openapi.yml` in the project's sources), a
//! `wasi:http` component the host mounts under `/api`. It parses HTTP and
//! JSON, authenticates the caller through `users`, calls the service that
//! owns what is asked for (`users`, `profiles`, `articles`, `comments`) in
//! the same scope, and shapes the answer as the spec says. It touches no
//! table itself: its manifest grants it no channel.
//!
//! The host saves the scope only when the answer is below 400, so a
//! request that is refused halfway (a 403 after a service queued a
//! command) applies nothing.

wasip2::http::proxy::export!(Api);

sluice_guest::generate!("conduit:app/api", "../wit");

mod http;
mod shapes;

use conduit::app::articles::{self, Draft, Filter, Revision};
use conduit::app::comments;
use conduit::app::profiles::{self, Problem};
use conduit::app::users::{self, Changes, Problem as UserProblem, User};
use serde_json::{Value as Json, json};
use sluice_guest::types::Error;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

use http::Answer;

/// Every method a route of the API takes, for CORS preflights.
const METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
/// A list's length when the query gives none.
const DEFAULT_LIMIT: u32 = 20;

struct Api;

impl wasip2::exports::http::incoming_handler::Guest for Api {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if matches!(request.method(), Method::Options) {
            return http::respond(out, &Answer::empty(204), Some(METHODS));
        }
        let answer = route(&request).unwrap_or_else(|answer| answer);
        http::respond(out, &answer, None);
    }
}

/// What a handler gives: the answer, or the refusal as an answer.
type Handled = Result<Answer, Answer>;

/// The request's parts a route needs.
struct Asked<'a> {
    request: &'a IncomingRequest,
    query: Vec<(String, String)>,
}

impl Asked<'_> {
    /// The signed-in user, or 401.
    fn user(&self) -> Result<(User, String), Answer> {
        self.maybe_user()?.ok_or_else(|| Answer::error(401, "this needs an Authorization: Token header"))
    }

    /// The signed-in user, when the request carries a token (a token that
    /// does not verify is a 401 all the same).
    fn maybe_user(&self) -> Result<Option<(User, String)>, Answer> {
        let Some(header) = http::header(self.request, "authorization") else { return Ok(None) };
        let token = header
            .strip_prefix("Token ")
            .or_else(|| header.strip_prefix("Bearer "))
            .ok_or_else(|| Answer::error(401, "the Authorization header is not `Token <jwt>`"))?
            .trim()
            .to_string();
        let user = users::authenticate(&token).map_err(user_problem)?;
        Ok(Some((user, token)))
    }

    fn viewer(&self) -> Result<Option<i64>, Answer> {
        Ok(self.maybe_user()?.map(|(u, _)| u.id))
    }

    fn param(&self, name: &str) -> Option<String> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// `limit` (1 or more; 20 when absent) and `offset` (0 or more).
    fn paging(&self) -> Result<(u32, u32), Answer> {
        let number = |name: &str, default: u32, least: u32| match self.param(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= least)
                .ok_or_else(|| Answer::error(422, &format!("{name} must be an integer of at least {least}"))),
        };
        Ok((number("limit", DEFAULT_LIMIT, 1)?, number("offset", 0, 0)?))
    }
}

fn route(request: &IncomingRequest) -> Handled {
    let method = request.method();
    let target = request.path_with_query().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = http::query_pairs(query)
        .filter(|pairs| pairs.iter().all(|(n, v)| !n.contains('\0') && !v.contains('\0')))
        .ok_or_else(|| Answer::error(422, "the query is not valid UTF-8, or holds a NUL"))?;
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| http::decode(s, false).filter(|s| !s.contains('\0')))
        .collect::<Option<_>>()
        .ok_or_else(|| Answer::error(404, "the path is not valid UTF-8, or holds a NUL"))?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let asked = Asked { request, query };
    use Method::{Delete, Get, Post, Put};
    match (parts.as_slice(), &method) {
        (["users", "login"], Post) => login(&asked),
        (["users"], Post) => register(&asked),
        (["user"], Get) => current(&asked),
        (["user"], Put) => update_user(&asked),
        (["profiles", name], Get) => profile(&asked, name),
        (["profiles", name, "follow"], Post) => follow(&asked, name, true),
        (["profiles", name, "follow"], Delete) => follow(&asked, name, false),
        (["articles", "feed"], Get) => feed(&asked),
        (["articles"], Get) => list(&asked),
        (["articles"], Post) => create(&asked),
        (["articles", slug], Get) => article(&asked, slug),
        (["articles", slug], Put) => edit(&asked, slug),
        (["articles", slug], Delete) => delete(&asked, slug),
        (["articles", slug, "favorite"], Post) => favorite(&asked, slug, true),
        (["articles", slug, "favorite"], Delete) => favorite(&asked, slug, false),
        (["articles", slug, "comments"], Get) => comments_of(&asked, slug),
        (["articles", slug, "comments"], Post) => comment(&asked, slug),
        (["articles", slug, "comments", id], Delete) => delete_comment(&asked, slug, id),
        (["tags"], Get) => tags(),
        (route, _) => match allowed(route) {
            Some(allow) => {
                Err(Answer { allow: Some(allow), ..Answer::error(405, "this route does not take that method") })
            }
            None => Err(Answer::error(404, &format!("no route {path}"))),
        },
    }
}

/// The methods a route of the API takes, when `parts` is one.
fn allowed(parts: &[&str]) -> Option<&'static str> {
    Some(match parts {
        ["users"] | ["users", "login"] => "POST",
        ["user"] => "GET, PUT",
        ["profiles", _] | ["articles", "feed"] | ["tags"] => "GET",
        ["articles", _, "comments"] | ["articles"] => "GET, POST",
        ["profiles", _, "follow"] | ["articles", _, "favorite"] => "POST, DELETE",
        ["articles", _] => "GET, PUT, DELETE",
        ["articles", _, "comments", _] => "DELETE",
        _ => return None,
    })
}

// Users and authentication.

fn login(asked: &Asked) -> Handled {
    let body = http::read_json(asked.request)?;
    let user = object(&body, "user")?;
    let [email, password] = all_required(user, ["email", "password"])?;
    let signed = users::login(&email, &password).map_err(user_problem)?;
    Ok(Answer::json(200, shapes::user(&signed.user, &signed.token)))
}

fn register(asked: &Asked) -> Handled {
    let body = http::read_json(asked.request)?;
    let user = object(&body, "user")?;
    let [username, email, password] = all_required(user, ["username", "email", "password"])?;
    let signed = users::register(&username, &email, &password).map_err(user_problem)?;
    Ok(Answer::json(201, shapes::user(&signed.user, &signed.token)))
}

fn current(asked: &Asked) -> Handled {
    let (user, token) = asked.user()?;
    Ok(Answer::json(200, shapes::user(&user, &token)))
}

fn update_user(asked: &Asked) -> Handled {
    let (user, _) = asked.user()?;
    let body = http::read_json(asked.request)?;
    let fields = object(&body, "user")?;
    let changes = Changes {
        email: optional(fields, "email")?,
        username: optional(fields, "username")?,
        password: optional(fields, "password")?,
        bio: nullable(fields, "bio")?,
        image: nullable(fields, "image")?,
    };
    let signed = users::update(user.id, &changes).map_err(user_problem)?;
    Ok(Answer::json(200, shapes::user(&signed.user, &signed.token)))
}

// Profiles.

fn profile(asked: &Asked, name: &str) -> Handled {
    let found = profiles::by_name(asked.viewer()?, name).map_err(problem)?;
    Ok(Answer::json(200, json!({ "profile": shapes::profile(&found) })))
}

fn follow(asked: &Asked, name: &str, on: bool) -> Handled {
    let (user, _) = asked.user()?;
    let found =
        if on { profiles::follow(user.id, name) } else { profiles::unfollow(user.id, name) }.map_err(problem)?;
    Ok(Answer::json(200, json!({ "profile": shapes::profile(&found) })))
}

// Articles.

fn list(asked: &Asked) -> Handled {
    let (limit, offset) = asked.paging()?;
    let filter = Filter {
        tag: asked.param("tag"),
        author: asked.param("author"),
        favorited: asked.param("favorited"),
        limit,
        offset,
    };
    let page = articles::search(asked.viewer()?, &filter).map_err(problem)?;
    Ok(Answer::json(200, shapes::page(&page)))
}

fn feed(asked: &Asked) -> Handled {
    let (user, _) = asked.user()?;
    let (limit, offset) = asked.paging()?;
    let page = articles::feed(user.id, limit, offset).map_err(problem)?;
    Ok(Answer::json(200, shapes::page(&page)))
}

fn article(asked: &Asked, slug: &str) -> Handled {
    let found = articles::read(asked.viewer()?, slug).map_err(problem)?;
    Ok(Answer::json(200, json!({ "article": shapes::article(&found) })))
}

fn create(asked: &Asked) -> Handled {
    let (user, _) = asked.user()?;
    let body = http::read_json(asked.request)?;
    let fields = object(&body, "article")?;
    let [title, description, body] = all_required(fields, ["title", "description", "body"])?;
    let tag_list = match fields.get("tagList") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().filter(|t| !t.contains('\0')).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Answer::error(422, "tagList must be an array of strings without NUL"))?,
        Some(_) => return Err(Answer::error(422, "tagList must be an array of strings")),
    };
    let draft = Draft { title, description, body, tag_list };
    let made = articles::create(user.id, &draft).map_err(problem)?;
    Ok(Answer::json(201, json!({ "article": shapes::article(&made) })))
}

fn edit(asked: &Asked, slug: &str) -> Handled {
    let (user, _) = asked.user()?;
    let body = http::read_json(asked.request)?;
    let fields = object(&body, "article")?;
    let edit = Revision {
        title: optional(fields, "title")?,
        description: optional(fields, "description")?,
        body: optional(fields, "body")?,
    };
    let changed = articles::edit(user.id, slug, &edit).map_err(problem)?;
    Ok(Answer::json(200, json!({ "article": shapes::article(&changed) })))
}

/// Deletes the article, then its comments, in this one scope: both or
/// neither are saved.
fn delete(asked: &Asked, slug: &str) -> Handled {
    let (user, _) = asked.user()?;
    let id = articles::remove(user.id, slug).map_err(problem)?;
    comments::remove_all(id).map_err(problem)?;
    Ok(Answer::empty(204))
}

fn favorite(asked: &Asked, slug: &str, on: bool) -> Handled {
    let (user, _) = asked.user()?;
    let found =
        if on { articles::favorite(user.id, slug) } else { articles::unfavorite(user.id, slug) }.map_err(problem)?;
    Ok(Answer::json(200, json!({ "article": shapes::article(&found) })))
}

fn tags() -> Handled {
    Ok(Answer::json(200, json!({ "tags": articles::tags().map_err(problem)? })))
}

// Comments.

fn comments_of(asked: &Asked, slug: &str) -> Handled {
    let found = comments::of_article(asked.viewer()?, slug).map_err(problem)?;
    Ok(Answer::json(200, json!({ "comments": found.iter().map(shapes::comment).collect::<Vec<_>>() })))
}

fn comment(asked: &Asked, slug: &str) -> Handled {
    let (user, _) = asked.user()?;
    let body = http::read_json(asked.request)?;
    let fields = object(&body, "comment")?;
    let text = required(fields, "body").map_err(|reason| Answer::error(422, &reason))?;
    let made = comments::add(user.id, slug, &text).map_err(problem)?;
    Ok(Answer::json(200, json!({ "comment": shapes::comment(&made) })))
}

fn delete_comment(asked: &Asked, slug: &str, id: &str) -> Handled {
    let (user, _) = asked.user()?;
    let id: i64 = id.parse().map_err(|_| Answer::error(404, &format!("no comment {id}")))?;
    comments::remove(user.id, slug, id).map_err(problem)?;
    Ok(Answer::empty(204))
}

// Request bodies.

/// The object under `name` (`{"user": {…}}`), or 422.
fn object<'a>(body: &'a Json, name: &str) -> Result<&'a serde_json::Map<String, Json>, Answer> {
    body.get(name).and_then(Json::as_object).ok_or_else(|| Answer::error(422, &format!("{name} can't be blank")))
}

/// A string field that must be there and not blank: why not, as the
/// spec's words.
fn required(fields: &serde_json::Map<String, Json>, name: &str) -> Result<String, String> {
    match fields.get(name) {
        // PostgreSQL's text holds no NUL: refused here on every store.
        Some(Json::String(s)) if s.contains('\0') => Err(format!("{name} may not hold a NUL character")),
        Some(Json::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Json::String(_) | Json::Null) | None => Err(format!("{name} can't be blank")),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// The string fields `names`, or 422 with a reason for each one missing.
fn all_required<const N: usize>(
    fields: &serde_json::Map<String, Json>,
    names: [&str; N],
) -> Result<[String; N], Answer> {
    let found = names.map(|name| required(fields, name));
    let reasons: Vec<String> = found.iter().filter_map(|f| f.as_ref().err().cloned()).collect();
    if !reasons.is_empty() {
        return Err(Answer::errors(422, &reasons));
    }
    Ok(found.map(Result::unwrap_or_default))
}

/// A string field that may be absent; `null` counts as absent.
fn optional(fields: &serde_json::Map<String, Json>, name: &str) -> Result<Option<String>, Answer> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.contains('\0') => {
            Err(Answer::error(422, &format!("{name} may not hold a NUL character")))
        }
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Answer::error(422, &format!("{name} must be a string"))),
    }
}

/// A string field that may be absent, where `null` clears it (`bio`,
/// `image`).
fn nullable(fields: &serde_json::Map<String, Json>, name: &str) -> Result<Option<String>, Answer> {
    match fields.get(name) {
        Some(Json::Null) => Ok(Some(String::new())),
        _ => optional(fields, name),
    }
}

// Refusals.

fn user_problem(p: UserProblem) -> Answer {
    match p {
        UserProblem::Invalid(reasons) => Answer::errors(422, &reasons),
        UserProblem::Unauthorized(why) => Answer::error(401, &why),
        UserProblem::NotFound(why) => Answer::error(404, &why),
        UserProblem::Store(e) => store(&e),
    }
}

fn problem(p: Problem) -> Answer {
    match p {
        Problem::Invalid(reasons) => Answer::errors(422, &reasons),
        Problem::Forbidden(why) => Answer::error(403, &why),
        Problem::NotFound(why) => Answer::error(404, &why),
        Problem::Store(e) => store(&e),
    }
}

/// A refusal of the host: the detail goes to the log (what a guest prints
/// is logged with its scope), never to an anonymous client.
fn store(e: &Error) -> Answer {
    eprintln!("conduit-api: the host refused a read or command: {e:?}");
    match e {
        Error::Denied(_) => Answer::error(403, "refused by the host"),
        Error::Unavailable(_) => Answer::error(503, "the store is unavailable; try again"),
        Error::UnknownChannel(_) | Error::Invalid(_) => Answer::error(500, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: Json) -> serde_json::Map<String, Json> {
        json.as_object().cloned().expect("an object")
    }

    #[test]
    fn fields_are_read_as_the_spec_words_them() {
        let user = fields(json!({ "email": "jake@jake.jake", "password": "", "bio": null, "image": 3 }));
        assert_eq!(required(&user, "email").as_deref(), Ok("jake@jake.jake"));
        assert_eq!(required(&user, "password"), Err("password can't be blank".into()));
        assert_eq!(required(&user, "username"), Err("username can't be blank".into()));
        assert_eq!(nullable(&user, "bio").ok(), Some(Some(String::new())));
        assert!(optional(&user, "image").is_err());
        assert!(matches!(optional(&user, "username"), Ok(None)));
    }

    #[test]
    fn refusals_answer_with_the_spec_s_statuses() {
        let status = |a: Answer| a.status;
        assert_eq!(status(problem(Problem::Invalid(vec!["x".into()]))), 422);
        assert_eq!(status(problem(Problem::Forbidden("x".into()))), 403);
        assert_eq!(status(problem(Problem::NotFound("x".into()))), 404);
        assert_eq!(status(user_problem(UserProblem::Unauthorized("x".into()))), 401);
        let body = Answer::errors(422, &["body can't be blank".into()]).body;
        assert_eq!(body, Some(json!({ "errors": { "body": ["body can't be blank"] } })));
    }
}
