//! Conduit service `comments`: comments on articles. It finds an article
//! through the `articles` service (`id-of`) and shows authors through
//! `profiles`, both called in the same scope; it owns the `comments`
//! table, which no other service is granted.

sluice_guest::generate!("conduit:app/comments-service", "../wit");

use conduit::app::articles;
use conduit::app::profiles::{self, Problem};
use exports::conduit::app::comments::{Comment, Guest};
use sluice_guest::{from, row, time, to};

const CHANNEL: &str = "main";
/// The longest comment, in bytes.
const MAX_BODY: usize = 16 << 10;
/// The most comments `of-article` shows, oldest first.
const MAX_LISTED: u32 = 500;

struct Component;

impl Guest for Component {
    fn add(viewer: i64, slug: String, body: String) -> Result<Comment, Problem> {
        check_body(&body).map_err(|why| Problem::Invalid(vec![why]))?;
        let article = articles::id_of(&slug)?;
        let id = time::fresh_id();
        let now = time::now_rfc3339();
        to::insert(
            CHANNEL,
            "comments",
            &row(&[
                ("id", id.into()),
                ("article", article.into()),
                ("author", viewer.into()),
                ("body", body.as_str().into()),
                ("created_at", now.as_str().into()),
                ("updated_at", now.as_str().into()),
            ]),
        )
        .map_err(Problem::Store)?;
        let author = profiles::by_ids(Some(viewer), &[viewer])?
            .pop()
            .map(|(_, p)| p)
            .ok_or_else(|| Problem::NotFound(format!("no user {viewer}")))?;
        Ok(Comment { id, created_at: now.clone(), updated_at: now, body, author })
    }

    fn of_article(viewer: Option<i64>, slug: String) -> Result<Vec<Comment>, Problem> {
        let article = articles::id_of(&slug)?;
        let rows = from::query(
            CHANNEL,
            "SELECT id, author, body, created_at, updated_at FROM comments WHERE article = ?1 \
             ORDER BY created_at, id LIMIT ?2",
            &[article.into(), MAX_LISTED.into()],
        )
        .map_err(Problem::Store)?;
        let ids: Vec<i64> = rows.iter().filter_map(|r| r.get("author")).collect();
        let authors: std::collections::HashMap<i64, _> = profiles::by_ids(viewer, &ids)?.into_iter().collect();
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Comment {
                    id: r.get("id")?,
                    created_at: r.get("created_at")?,
                    updated_at: r.get("updated_at")?,
                    body: r.get("body")?,
                    author: authors.get(&r.get::<i64>("author")?)?.clone(),
                })
            })
            .collect())
    }

    fn remove(viewer: i64, slug: String, id: i64) -> Result<(), Problem> {
        let article = articles::id_of(&slug)?;
        let rows = from::query(
            CHANNEL,
            "SELECT author FROM comments WHERE id = ?1 AND article = ?2",
            &[id.into(), article.into()],
        )
        .map_err(Problem::Store)?;
        match rows.value::<i64>(0, "author") {
            None => Err(Problem::NotFound(format!("no comment {id} on {slug}"))),
            Some(author) if author != viewer => Err(Problem::Forbidden(format!("the comment {id} is not yours"))),
            Some(_) => {
                let ticket = to::delete(CHANNEL, "comments", &row(&[("id", id.into())])).map_err(Problem::Store)?;
                to::expect(ticket, 1).map_err(Problem::Store)
            }
        }
    }

    fn remove_all(article: i64) -> Result<(), Problem> {
        to::delete(CHANNEL, "comments", &row(&[("article", article.into())])).map_err(Problem::Store)?;
        Ok(())
    }
}

export!(Component);

/// Why a comment's body is refused, if it is.
fn check_body(body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        return Err("body can't be blank".into());
    }
    if body.len() > MAX_BODY {
        return Err(format!("body is longer than {MAX_BODY} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_neither_blank_nor_too_long() {
        assert_eq!(check_body(" \n"), Err("body can't be blank".into()));
        assert!(check_body(&"x".repeat(MAX_BODY + 1)).is_err());
        assert_eq!(check_body("His name was my name too."), Ok(()));
    }
}
