//! Conduit service `users`: accounts and authentication. It is the only
//! service granted the table of password hashes (`passwords`) and the key tokens
//! are signed with (the secret `jwt` of the host's `keys` channel, which
//! the operator gives as `${env:…}` or `${file:…}`; it is in no code and no
//! repository). The API component calls `authenticate` first on every
//! request with a token, and passes the user id it returns to the others.

sluice_guest::generate!("conduit:app/users-service", "../wit");

mod password;
mod token;

use exports::conduit::app::users::{Changes, Guest, Problem, SignedIn, User};
use sluice_guest::types::{Error, Value};
use sluice_guest::{from, row, time, to};

/// The channel the tables are in.
const CHANNEL: &str = "main";
/// The `secrets` channel, and the name of the signing key in it.
const KEYS: &str = "keys";
const JWT_KEY: &str = "jwt";
/// The shortest signing key accepted: HS256 wants 256 bits.
const MIN_KEY: usize = 32;
/// How long a token is valid.
const TOKEN_SECONDS: u64 = 7 * 24 * 3600;
/// The longest username, email, image URL and bio, in bytes.
const MAX_NAME: usize = 64;
const MAX_EMAIL: usize = 254;
const MAX_IMAGE: usize = 2048;
const MAX_BIO: usize = 4096;
/// Passwords: at least 8 bytes; at most 256, so a hash costs what it should.
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

struct Component;

impl Guest for Component {
    fn register(username: String, email: String, password: String) -> Result<SignedIn, Problem> {
        let mut reasons = Vec::new();
        check_username(&username, &mut reasons);
        check_email(&email, &mut reasons);
        check_password(&password, &mut reasons);
        if reasons.is_empty() {
            taken(None, Some(&username), Some(&email), &mut reasons)?;
        }
        if !reasons.is_empty() {
            return Err(Problem::Invalid(reasons));
        }
        let user = User { id: time::fresh_id(), email, username, bio: String::new(), image: String::new() };
        let hash = password::hash(&password, &time::random_bytes(16)).map_err(invalid_store)?;
        to::insert(
            CHANNEL,
            "users",
            &row(&[
                ("id", user.id.into()),
                ("email", user.email.as_str().into()),
                ("username", user.username.as_str().into()),
            ]),
        )
        .map_err(Problem::Store)?;
        to::insert(CHANNEL, "passwords", &row(&[("user_id", user.id.into()), ("hash", hash.into())]))
            .map_err(Problem::Store)?;
        signed_in(user)
    }

    fn login(email: String, password: String) -> Result<SignedIn, Problem> {
        let mut reasons = Vec::new();
        if email.is_empty() {
            reasons.push("email can't be blank".to_string());
        }
        if password.is_empty() {
            reasons.push("password can't be blank".to_string());
        }
        if !reasons.is_empty() {
            return Err(Problem::Invalid(reasons));
        }
        let found = from::query(
            CHANNEL,
            "SELECT u.id, u.email, u.username, u.bio, u.image, p.hash AS password_hash \
             FROM users u JOIN passwords p ON p.user_id = u.id WHERE u.email = ?1",
            &[email.as_str().into()],
        )
        .map_err(Problem::Store)?;
        let stored: Option<String> = found.value(0, "password_hash");
        let refused = || Err(Problem::Unauthorized("email or password is invalid".into()));
        // A password longer than any accepted is not hashed at all.
        if password.len() > MAX_PASSWORD {
            return refused();
        }
        match (user_of(&found), stored) {
            (Some(user), Some(stored)) if password::verify(&password, &stored) => signed_in(user),
            (Some(_), Some(_)) => refused(),
            _ => {
                // No such user: hash all the same, so that the answer takes
                // as long as for a wrong password and tells nobody which
                // emails have accounts.
                let _ = password::hash(&password, &[0; 16]);
                refused()
            }
        }
    }

    fn authenticate(token: String) -> Result<User, Problem> {
        let id = token::verify(&key()?, &token, time::now_seconds()).map_err(|refused| {
            Problem::Unauthorized(match refused {
                token::Refused::Expired => "the token has expired; log in again".into(),
                token::Refused::Signature | token::Refused::Malformed => "the token is not valid".into(),
            })
        })?;
        by_id(id)?.ok_or_else(|| Problem::Unauthorized("the token's user no longer exists".into()))
    }

    fn update(id: i64, changes: Changes) -> Result<SignedIn, Problem> {
        let mut user = by_id(id)?.ok_or_else(|| Problem::NotFound(format!("no user {id}")))?;
        let mut reasons = Vec::new();
        let mut set: Vec<(&str, Value)> = Vec::new();
        if let Some(username) = changes.username.filter(|u| *u != user.username) {
            check_username(&username, &mut reasons);
            set.push(("username", username.as_str().into()));
            user.username = username;
        }
        if let Some(email) = changes.email.filter(|e| *e != user.email) {
            check_email(&email, &mut reasons);
            set.push(("email", email.as_str().into()));
            user.email = email;
        }
        if let Some(bio) = changes.bio {
            if bio.len() > MAX_BIO {
                reasons.push(format!("bio is longer than {MAX_BIO} bytes"));
            }
            set.push(("bio", bio.as_str().into()));
            user.bio = bio;
        }
        if let Some(image) = changes.image {
            if image.len() > MAX_IMAGE {
                reasons.push(format!("image is longer than {MAX_IMAGE} bytes"));
            }
            set.push(("image", image.as_str().into()));
            user.image = image;
        }
        if let Some(password) = &changes.password {
            check_password(password, &mut reasons);
        }
        if reasons.is_empty() {
            let name = set.iter().any(|(c, _)| *c == "username").then_some(user.username.as_str());
            let email = set.iter().any(|(c, _)| *c == "email").then_some(user.email.as_str());
            taken(Some(id), name, email, &mut reasons)?;
        }
        if !reasons.is_empty() {
            return Err(Problem::Invalid(reasons));
        }
        if let Some(password) = changes.password {
            let hash = password::hash(&password, &time::random_bytes(16)).map_err(invalid_store)?;
            let key = row(&[("user_id", id.into())]);
            let ticket =
                to::update(CHANNEL, "passwords", &key, &row(&[("hash", hash.into())])).map_err(Problem::Store)?;
            to::expect(ticket, 1).map_err(Problem::Store)?;
        }
        if !set.is_empty() {
            let ticket =
                to::update(CHANNEL, "users", &row(&[("id", id.into())]), &row(&set)).map_err(Problem::Store)?;
            // The user must still be there when the save applies it.
            to::expect(ticket, 1).map_err(Problem::Store)?;
        }
        signed_in(user)
    }
}

export!(Component);

/// The user with a fresh token.
fn signed_in(user: User) -> Result<SignedIn, Problem> {
    let token = token::sign(&key()?, user.id, time::now_seconds() + TOKEN_SECONDS);
    Ok(SignedIn { user, token })
}

/// The signing key, from the host's `keys` channel.
fn key() -> Result<Vec<u8>, Problem> {
    match from::get(KEYS, JWT_KEY).map_err(Problem::Store)? {
        Some(key) if key.len() >= MIN_KEY => Ok(key),
        Some(_) => {
            Err(invalid_store(format!("the secret {JWT_KEY} of channel {KEYS} is shorter than {MIN_KEY} bytes")))
        }
        None => Err(invalid_store(format!("channel {KEYS} has no secret {JWT_KEY}"))),
    }
}

/// A failure of the service's own set-up, answered as a store error (500).
fn invalid_store(why: String) -> Problem {
    Problem::Store(Error::Invalid(why))
}

fn by_id(id: i64) -> Result<Option<User>, Problem> {
    let found = from::query(CHANNEL, "SELECT id, email, username, bio, image FROM users WHERE id = ?1", &[id.into()])
        .map_err(Problem::Store)?;
    Ok(user_of(&found))
}

fn user_of(rows: &sluice_guest::types::Rows) -> Option<User> {
    Some(User {
        id: rows.value(0, "id")?,
        email: rows.value(0, "email")?,
        username: rows.value(0, "username")?,
        bio: rows.value(0, "bio")?,
        image: rows.value(0, "image")?,
    })
}

/// Adds a reason for a username or email another user (not `except`) has.
/// The read is kept: a user registered with the same name before this
/// scope saves makes the save a conflict, and the scope runs again and
/// finds the name taken, so the answer is a 422, never a failed insert.
fn taken(
    except: Option<i64>,
    username: Option<&str>,
    email: Option<&str>,
    reasons: &mut Vec<String>,
) -> Result<(), Problem> {
    if username.is_none() && email.is_none() {
        return Ok(());
    }
    let found = from::query(
        CHANNEL,
        "SELECT username, email FROM users WHERE (username = ?1 OR email = ?2) AND id <> ?3",
        &[username.into(), email.into(), except.unwrap_or(0).into()],
    )
    .map_err(Problem::Store)?;
    for user in found.iter() {
        if username.is_some() && user.get::<String>("username").as_deref() == username {
            reasons.push("username has already been taken".into());
        }
        if email.is_some() && user.get::<String>("email").as_deref() == email {
            reasons.push("email has already been taken".into());
        }
    }
    Ok(())
}

fn check_username(username: &str, reasons: &mut Vec<String>) {
    if username.trim().is_empty() {
        reasons.push("username can't be blank".into());
    } else if username.len() > MAX_NAME {
        reasons.push(format!("username is longer than {MAX_NAME} bytes"));
    } else if username.contains('/') || username.chars().any(char::is_control) {
        // It is a path segment of /api/profiles/{username}.
        reasons.push("username may not hold '/' or control characters".into());
    }
}

fn check_email(email: &str, reasons: &mut Vec<String>) {
    if email.trim().is_empty() {
        reasons.push("email can't be blank".into());
    } else if email.len() > MAX_EMAIL {
        reasons.push(format!("email is longer than {MAX_EMAIL} bytes"));
    } else if !email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.')) {
        reasons.push("email is invalid".into());
    }
}

fn check_password(password: &str, reasons: &mut Vec<String>) {
    if password.is_empty() {
        reasons.push("password can't be blank".into());
    } else if password.len() < MIN_PASSWORD {
        reasons.push(format!("password is shorter than {MIN_PASSWORD} characters"));
    } else if password.len() > MAX_PASSWORD {
        reasons.push(format!("password is longer than {MAX_PASSWORD} bytes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(f: impl Fn(&mut Vec<String>)) -> Vec<String> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn fields_are_checked_with_the_api_s_words() {
        assert_eq!(reasons(|r| check_username("", r)), ["username can't be blank"]);
        assert_eq!(reasons(|r| check_username("a/b", r)).len(), 1);
        assert!(reasons(|r| check_username("jake", r)).is_empty());
        assert_eq!(reasons(|r| check_email("jake", r)), ["email is invalid"]);
        assert!(reasons(|r| check_email("jake@jake.jake", r)).is_empty());
        assert_eq!(reasons(|r| check_password("short", r)), ["password is shorter than 8 characters"]);
        assert_eq!(reasons(|r| check_password(&"x".repeat(300), r)), ["password is longer than 256 bytes"]);
    }
}
